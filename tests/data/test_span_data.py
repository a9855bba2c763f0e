"""The span head's training data: token targets of generated examples, and the window that
holds the answer."""

from __future__ import annotations

from longmm.data.span_data import _answer_window, _token_targets
from longmm.reading.answer.span_head import make_windows
from longmm.reading.synth.facts import SpanExample, make_span_examples


def test_token_targets_cover_the_answer() -> None:
    for x in make_span_examples(40, seed=3):
        (w,) = make_windows(x.question, x.passage, max_length=256)
        s, e = _token_targets(w, x.answer)
        if x.answer is None:
            assert (s, e) == (0, 0)
            continue
        a = w.offsets[s - w.passage_at][0]
        b = w.offsets[e - w.passage_at][1]
        assert x.passage[a:b] == x.passage[x.answer[0] : x.answer[1]]


def test_training_window_holds_the_answer() -> None:
    filler = " ".join(f"word{i}" for i in range(200))
    passage = f"{filler} The pass key is 48213."
    a = passage.index("48213")
    example = SpanExample("What is the pass key?", passage, (a, a + 5), "passkey")
    w = _answer_window(example, max_length=64)
    s, e = _token_targets(w, example.answer)
    assert (s, e) != (0, 0)
    assert passage[w.offsets[s - w.passage_at][0] : w.offsets[e - w.passage_at][1]] == "48213"

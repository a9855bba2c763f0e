"""The span-extraction head: generated examples, windows, training on a tiny config, and the
extractor the retrieval reader plugs in."""

from __future__ import annotations

import itertools
from pathlib import Path

import lightning as L
import pytest
import torch

from longmm.errors import DataError
from longmm.reading.answer import AnswerExtractor, Evidence
from longmm.reading.span import (
    FAMILIES,
    SpanData,
    SpanExample,
    SpanExtraction,
    SpanExtractor,
    _answer_window,
    _token_targets,
    _whole_words,
    best_span,
    load_prose,
    load_span_head,
    make_span_examples,
    make_windows,
)


def test_examples_are_seeded_varied_and_point_at_their_answers() -> None:
    examples = make_span_examples(200, seed=1)
    assert examples == make_span_examples(200, seed=1)
    assert examples != make_span_examples(200, seed=2)
    assert {x.family for x in examples} == set(FAMILIES)
    assert len({x.question for x in examples}) > 150  # phrasings and keys vary
    negatives = [x for x in examples if x.answer is None]
    assert 0.1 < len(negatives) / len(examples) < 0.35
    for x in examples:
        if x.answer is not None:
            a, b = x.answer
            assert 0 <= a < b <= len(x.passage)
            assert x.passage[a:b].strip() == x.passage[a:b]


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


def test_windows_overlap_and_cover_a_long_passage() -> None:
    passage = " ".join(f"word{i}" for i in range(400))
    windows = make_windows("Which word comes last?", passage, max_length=64, stride=16)
    assert len(windows) > 5
    assert all(len(w.ids) <= 64 for w in windows)
    assert windows[0].offsets[0][0] == 0 and windows[-1].offsets[-1][1] == len(passage)
    for w1, w2 in itertools.pairwise(windows):
        assert w2.offsets[0][0] < w1.offsets[-1][1]  # overlapping


def test_best_span_obeys_order_and_length() -> None:
    start = torch.tensor([1.0, -10, 5, 0, 0, 0])  # position 0 is [CLS], "no answer"
    end = torch.tensor([-1.0, 9, 0, 0, 0, 4])
    i, j, margin = best_span(start, end, passage_at=1, n_passage=5, max_tokens=3)
    # The end scoring 9 lies before the best start, and (1, 4) is 4 tokens long: neither may win.
    assert (i, j) == (1, 1) and margin == pytest.approx(5.0)


def test_whole_words() -> None:
    text = "The pass key is 1234567. Remember"
    assert _whole_words(text, 16, 19) == (16, 23)
    assert _whole_words(text, 0, 3) == (0, 3)


def test_tiny_training_and_extractor(tmp_path: Path) -> None:
    L.seed_everything(0)
    data = SpanData(train=48, val=16, test=16, max_words=25, max_length=96, batch_size=16)
    model = SpanExtraction(dim=32, heads=2, layers=1, lr=3e-3)
    trainer = L.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=data)
    trainer.test(model, datamodule=data, verbose=False)
    results = model.eval_results["test"]
    assert set(results) >= {"accuracy", "no_answer_accuracy", "answer_token_f1"}
    assert 0.0 <= results["accuracy"] <= 1.0 and results["examples"] == 16
    model.write_artifacts(tmp_path)
    head = load_span_head(tmp_path / "span_head.safetensors")
    assert sum(p.numel() for p in head.parameters()) == sum(
        p.numel() for p in model.head.parameters()
    )
    extractor = SpanExtractor(weights=tmp_path / "span_head.safetensors", max_length=64)
    assert isinstance(extractor, AnswerExtractor)
    text = "Here we go. The pass key is 52311. Remember it. The sky is blue. " * 3
    passages = [Evidence(text, "doc", 100, 100 + len(text)), Evidence("", "doc", 0, 0)]
    span = extractor.extract("What is the pass key?", passages)
    assert span is not None and span.evidence == 0
    assert span.text == text[span.start - 100 : span.end - 100]  # cites the document offsets
    assert extractor.extract("What is the pass key?", []) is None


def test_missing_or_foreign_weights(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_span_head(tmp_path / "nope.safetensors")
    from longmm.runs import save_weights

    save_weights({"w": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(DataError, match="not a span head"):
        load_span_head(tmp_path / "other.safetensors")


def test_prose_sources_give_clean_sentences(tmp_path: Path) -> None:
    import gzip

    (tmp_path / "essay.txt").write_text(
        "A short one. This sentence has more than five words in it. Tiny."
    )
    with gzip.open(tmp_path / "lines.en.gz", "wt", encoding="utf-8") as f:
        f.write(
            "two dogs run across a wide green field\n"
            "This sentence has more than five words in it.\n"
        )
    (tmp_path / "table.tsv").write_text("sentence\tlabel\n, a film that never finds its feet \t0\n")
    prose = load_prose([tmp_path / "essay.txt", tmp_path / "lines.en.gz", tmp_path / "table.tsv"])
    assert prose == [
        "This sentence has more than five words in it.",  # once: duplicates are dropped
        "Two dogs run across a wide green field.",
        "A film that never finds its feet.",  # the table's first column, header skipped
    ]
    examples = make_span_examples(60, seed=0, max_words=40, prose=prose)
    assert any(p in x.passage for x in examples for p in prose)
    for x in examples:
        if x.answer is not None:  # the answer is still where it says
            assert x.passage[x.answer[0] : x.answer[1]].strip()
    with pytest.raises(DataError, match="not found"):
        load_prose([tmp_path / "missing.txt"])
    (tmp_path / "short.txt").write_text("Too short.")
    with pytest.raises(DataError, match="no sentences"):
        load_prose([tmp_path / "short.txt"])


def test_training_window_holds_the_answer() -> None:
    filler = " ".join(f"word{i}" for i in range(200))
    passage = f"{filler} The pass key is 48213."
    a = passage.index("48213")
    example = SpanExample("What is the pass key?", passage, (a, a + 5), "passkey")
    w = _answer_window(example, max_length=64)
    s, e = _token_targets(w, example.answer)
    assert (s, e) != (0, 0)
    assert passage[w.offsets[s - w.passage_at][0] : w.offsets[e - w.passage_at][1]] == "48213"


def test_best_span_stays_inside_one_sentence() -> None:
    import torch

    from longmm.reading.span import best_span

    # [CLS] then five passage tokens; the best pair runs from token 1 to token 3 ...
    start = torch.tensor([0.0, 5.0, 0.0, 0.0, 0.0, 0.0])
    end = torch.tensor([0.0, 0.0, 0.0, 4.0, 1.0, 0.0])
    assert best_span(start, end, passage_at=1, n_passage=5, max_tokens=5)[:2] == (0, 2)
    # ... but tokens 0-1 and 2-4 are two sentences: the span must end in the first.
    i, j, margin = best_span(start, end, 1, 5, 5, sentence=[0, 0, 1, 1, 1])
    assert (i, j) == (0, 0) and margin == 5.0


def test_a_value_that_opens_its_sentence_is_capitalised_and_still_the_answer() -> None:
    from longmm.reading.span import _fill

    text, span = _fill("{V} repairs {k}.", "the roof", "the landlord")
    assert text == "The landlord repairs the roof." and span is not None
    assert text[span[0] : span[1]] == "The landlord"
    text, span = _fill("It is {v} who {k}. {V} does.", "pays", "the tenant")
    assert span is not None and text[span[0] : span[1]] == "the tenant"  # the first one

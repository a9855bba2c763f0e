"""Long-context task generators: the answer exactly once, at the requested depth, seeded."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from longmm.errors import DataError
from longmm.reading.synth.haystack import PASSKEY_FILLER, TokenCounter, default_counter
from longmm.reading.synth.needles import (
    PASSKEY_INTRO,
    TASKS,
    depths_for,
    make_sample,
    make_samples,
    score,
)

LENGTH = 1024


def _whole(text: str, word: str) -> list[int]:
    return [m.start() for m in re.finditer(rf"(?<![A-Za-z0-9]){re.escape(word)}(?!\w)", text)]


def _token_depth(text: str, position: int, tokens: int, intro: str = "") -> float:
    """Tokens before ``position`` over all tokens, the intro (not part of depth) left out."""
    skip = default_counter().count(intro) if intro else 0
    return (default_counter().count(text[:position]) - skip) / (tokens - skip)


@pytest.mark.parametrize("task", [t for t in TASKS if not t.startswith("mm_")])
@pytest.mark.parametrize("depth", [0.0, 0.37, 1.0])
def test_answers_once_inside_needles_at_depth(task: str, depth: float) -> None:
    s = make_sample(task, LENGTH, depth, seed=5)
    assert abs(s.tokens - LENGTH) <= 40  # filled up to the last whole filler line
    assert s.tokens == default_counter().count(s.text)  # the count is exact, not estimated
    assert s.needle_spans and s.answers
    for answer in s.answers:
        hits = _whole(s.text, answer)
        assert hits, f"{answer} missing"
        assert all(any(a <= h < b for a, b in s.needle_spans) for h in hits)
        # ... and inside exactly one needle (a needle may say it twice: "N is the pass key";
        # a variable is also named by the next hop of its chain, "VAR B = VAR A")
        owners = {k for k, (a, b) in enumerate(s.needle_spans) for h in hits if a <= h < b}
        assert len(owners) <= (2 if task == "variable_tracking" else 1)
    needle_text = s.text[s.needle_spans[0][0] : s.needle_spans[0][1]]
    assert s.text.count(needle_text) == 1
    # The first target needle sits at the requested depth, to within one filler line.
    intro = PASSKEY_INTRO if task == "passkey" else ""
    got = _token_depth(s.text, s.needle_spans[0][0], s.tokens, intro)
    # At depth 1 a chain's later hops must still follow its first line: they take ~40 tokens.
    slack = 70 if task == "variable_tracking" else 30
    assert abs(got - depth) <= slack / LENGTH, (task, depth, got)


def test_passkey_uses_the_standard_template() -> None:
    s = make_sample("passkey", 2048, 0.5, seed=1)
    (key,) = s.answers
    assert f"The pass key is {key}. Remember it. {key} is the pass key." in s.text
    assert s.text.count(PASSKEY_FILLER) > 10
    assert s.question == "What is the pass key?"


def test_seeded_and_deterministic() -> None:
    a = make_sample("niah_multikey", LENGTH, 0.5, seed=3, haystack="words")
    b = make_sample("niah_multikey", LENGTH, 0.5, seed=3, haystack="words")
    c = make_sample("niah_multikey", LENGTH, 0.5, seed=4, haystack="words")
    assert (a.text, a.answers, a.question) == (b.text, b.answers, b.question)
    assert a.text != c.text and a.answers != c.answers


def test_multikey_has_distractors_with_other_values() -> None:
    s = make_sample("niah_multikey", 2048, 0.2, seed=2, num_keys=5)
    magic = re.findall(r"special magic numbers for (\S+) is: (\d+)", s.text)
    assert len(magic) == 5 and len({v for _, v in magic}) == 5
    assert [v for _, v in magic].count(s.answers[0]) == 1


def test_variable_tracking_chain_in_order() -> None:
    s = make_sample("variable_tracking", 2048, 0.1, seed=0, hops=3, chains=2)
    names = s.answers
    assert len(names) == 4
    positions = [s.text.index(f"VAR {n} =") for n in names]
    assert positions == sorted(positions)  # every hop comes after the one it copies
    value = s.question.split("value ")[1].split()[0]
    assert f"VAR {names[0]} = {value}." in s.text
    for prev, cur in itertools.pairwise(names):
        assert f"VAR {cur} = VAR {prev}." in s.text


def test_text_folder_haystack(tmp_path) -> None:
    sentences = [f"Essay sentence number {w} talks about startups and code." for w in "abcdefgh"]
    for i in range(3):
        (tmp_path / f"e{i}.txt").write_text(" ".join(sentences[i:] + sentences[:i]) + "\n")
    s = make_sample("niah_single", LENGTH, 0.6, haystack=str(tmp_path), seed=1)
    assert "startups and code" in s.text
    assert _whole(s.text, s.answers[0])
    with pytest.raises(DataError, match="not found"):
        make_sample("passkey", LENGTH, 0.5, haystack=str(tmp_path / "missing"))


@pytest.mark.parametrize("task", ["mm_image", "mm_audio"])
def test_multimodal_needles(task: str) -> None:
    s = make_sample(task, LENGTH, 0.75, seed=7, num_figures=5)
    assert len(s.attachments) == 5
    target = next(a for a in s.attachments if a.position == s.needle_spans[0][0])
    assert s.answers == (target.target,)
    assert target.label.lower() in s.question
    assert len(_whole(s.text, target.label)) == 1  # the asked-for figure is named once
    assert len({a.label for a in s.attachments}) == 5
    for a in s.attachments:
        assert s.text[a.position :].startswith(a.label)
        if a.kind == "image":
            assert a.data.dtype == np.uint8 and a.data.shape == (8, 8)
        else:
            assert a.data.dtype == np.float32 and a.data.ndim == 1 and a.sample_rate == 8000
    got = _token_depth(s.text, target.position, s.tokens)
    assert abs(got - 0.75) <= 30 / LENGTH


def test_samples_spread_depths_and_differ() -> None:
    samples = list(make_samples("passkey", LENGTH, 5, seed=0))
    assert [s.depth for s in samples] == depths_for(5) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert len({s.answers for s in samples}) == 5


def test_word_token_counter() -> None:
    s = make_sample("passkey", LENGTH, 0.5, counter=TokenCounter("words"))
    assert abs(len(s.text.split()) - LENGTH) <= 20


def test_bad_requests_are_named() -> None:
    with pytest.raises(DataError, match="unknown needle task"):
        make_sample("nope", LENGTH, 0.5)
    with pytest.raises(DataError, match="length"):
        make_sample("passkey", 10, 0.5)
    with pytest.raises(DataError, match="depth"):
        make_sample("passkey", LENGTH, 1.5)


def test_score_whole_words() -> None:
    assert score("The pass key is 12345.", ["12345"]) == 1.0
    assert score("123456", ["12345"]) == 0.0
    assert score("7 and 9", ["7", "8"]) == 0.5

"""The embedded `sentiment` set: deterministic, balanced, labels that follow the stated rules
(negation flips, intensifiers keep, a contrast takes its main clause), and TextData reads it."""

from __future__ import annotations

import re

import pytest

from longmm.data import TextData
from longmm.data.builtin import BUILTINS
from longmm.data.builtin.sentiment import NEGATIVE, POSITIVE, make_sentiment

POS, NEG = set(POSITIVE), set(NEGATIVE)


def clause_positive(clause: str) -> bool:
    """Reference reading of one clause: the adjective's polarity, flipped by a negation."""
    words = clause.split()
    adjectives = [w for w in words if w in POS or w in NEG]
    assert len(adjectives) == 1, clause
    negated = "not" in words or "never" in words
    return (adjectives[0] in POS) != negated


def sentence_positive(text: str) -> bool:
    """Reference reading of a sentence: which clause a contrast keeps."""
    body = re.sub(
        r"^(honestly ,|overall ,|i have to say|to be fair ,|in the end ,|frankly ,) ", "", text
    )
    body = body.removesuffix(" .")
    if " , but " in body:
        return clause_positive(body.split(" , but ")[1])
    if body.startswith("although "):
        return clause_positive(body.split(" , ", 1)[1])
    if " , even though " in body:
        return clause_positive(body.split(" , even though ")[0])
    if " and " in body:
        first, second = body.split(" and ")
        assert clause_positive(first) == clause_positive(second), text
        return clause_positive(first)
    return clause_positive(body)


@pytest.fixture(scope="module")
def samples():
    return make_sentiment()


def test_deterministic_balanced_and_distinct(samples) -> None:
    assert len(samples) == 4000
    texts = [s.inputs["text"] for s in samples]
    assert len(set(texts)) == 4000
    assert sum(s.label == "positive" for s in samples) == 2000
    again = make_sentiment()
    assert [s.inputs["text"] for s in again] == texts and [s.label for s in again] == [
        s.label for s in samples
    ]
    other = make_sentiment(seed=1)
    assert [s.inputs["text"] for s in other] != texts
    assert samples[7].where == "sentiment[7]"


def test_labels_follow_the_rules(samples) -> None:
    for s in samples:
        assert sentence_positive(s.inputs["text"]) == (s.label == "positive"), s.inputs["text"]
    rules = {s.meta["rule"] for s in samples}
    assert rules == {"clause", "but", "although", "even though", "and"}
    texts = [s.inputs["text"] for s in samples]
    # The rules the set is about all occur: negated negative words, negation kept away from
    # its adjective, and contrasts whose discounted clause disagrees.
    assert any(re.search(r"\bnot (bad|awful|terrible)\b", t) for t in texts)
    assert any(re.search(r"\bnot (very|really|so|that|too) \w+", t) for t in texts)
    disagree = [
        s
        for s in samples
        if s.meta["rule"] == "but"
        and clause_positive(s.inputs["text"].split(" , but ")[0].split(", ")[-1])
        != (s.label == "positive")
    ]
    assert len(disagree) > 500


def test_text_data_reads_the_builtin() -> None:
    assert BUILTINS["sentiment"].modality == "text"
    dm = TextData(format="sentiment", min_frequency=1, vocab_size=1000, batch_size=16)
    dm.setup("fit")
    assert dm.classes == ["negative", "positive"]
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 3200, "val": 400, "test": 400}
    assert dm.vocab_size <= 1000
    assert "SYNTHETIC" in dm.summary()["description"]
    batch = next(iter(dm.train_dataloader()))
    assert batch["text"].shape == batch["text_mask"].shape and batch["text"].shape[0] == 16

"""The TF-IDF + logistic regression baseline: scores, C chosen on validation, clear errors;
weaker than word order on the embedded sentiment set, as that set is built to be."""

from __future__ import annotations

from pathlib import Path

import pytest

from longmm.baselines import tfidf_logreg
from longmm.data.builtin.sentiment import make_sentiment

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

GOOD = ["a great film", "lovely and warm", "great acting , lovely story", "warm and great"]
BAD = ["a dull film", "boring and cold", "dull acting , boring story", "cold and dull"]


def test_separable_words_are_learned() -> None:
    texts, labels = GOOD + BAD, ["pos"] * 4 + ["neg"] * 4
    result = tfidf_logreg(
        texts, labels, ["great and lovely", "boring and dull"], ["pos", "neg"],
        val_texts=["warm film", "cold film"], val_labels=["pos", "neg"],
    )  # fmt: skip
    assert result["accuracy"] == 1.0 and result["f1_macro"] == 1.0 and result["count"] == 2
    assert result["val_accuracy"] == 1.0 and result["C"] in result["val_accuracy_by_c"]
    assert result["features"] > 10 and result["seconds"] >= 0
    no_val = tfidf_logreg(texts, labels, ["great", "dull"], ["pos", "neg"])
    assert no_val["C"] == 1.0 and "val_accuracy" not in no_val


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="train: 2 texts but 1 labels"):
        tfidf_logreg(["a", "b"], [0], ["a"], [0])
    with pytest.raises(ValueError, match="both val_texts and val_labels"):
        tfidf_logreg(["a", "b"], [0, 1], ["a"], [0], val_texts=["a"])
    with pytest.raises(ValueError, match="test: no texts"):
        tfidf_logreg(["a", "b"], [0, 1], [], [])


def test_bag_of_words_is_weak_on_the_sentiment_set() -> None:
    samples = make_sentiment()
    texts, labels = [s.inputs["text"] for s in samples], [s.label for s in samples]
    result = tfidf_logreg(
        texts[:3200], labels[:3200], texts[3600:], labels[3600:],
        val_texts=texts[3200:3600], val_labels=labels[3200:3600],
    )  # fmt: skip
    # Far from the near-perfect score of an RNN (recipes/rnn_sentiment.yaml), above chance.
    assert 0.55 < result["accuracy"] < 0.8


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "sst2").is_dir(), reason=f"{SHARED / 'sst2'} is missing")
def test_sst2_baseline() -> None:
    from longmm.data import TextData

    dm = TextData(root=str(SHARED / "sst2"), format="table-splits", text_column="sentence")
    split = {
        name: ([s.inputs["text"] for s in items], [s.label for s in items])
        for name, items in dm.samples.items()
    }
    result = tfidf_logreg(*split["train"], *split["test"], *split["val"])
    assert result["count"] == 872 and 0.78 < result["accuracy"] < 0.86

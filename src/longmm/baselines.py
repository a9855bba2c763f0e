"""Classical baselines to report beside the neural models.

``tfidf_logreg`` is the usual strong bag-of-words baseline for text classification:
TF-IDF over word 1-2 grams and a logistic regression, its regularization ``C`` chosen on the
validation split when one is given. It sees which words (and word pairs) occur, not their
order beyond pairs, which is what the RNN and transformer recipes are measured against.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence
from typing import Any

DEFAULT_CS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)


def tfidf_logreg(
    train_texts: Sequence[str],
    train_labels: Sequence[Hashable],
    test_texts: Sequence[str],
    test_labels: Sequence[Hashable],
    val_texts: Sequence[str] | None = None,
    val_labels: Sequence[Hashable] | None = None,
    *,
    cs: Sequence[float] = DEFAULT_CS,
    ngram_range: tuple[int, int] = (1, 2),
    min_df: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit TF-IDF (word ``ngram_range`` grams, sublinear tf) + logistic regression on the
    training split and score the test split.

    ``C`` is the value of ``cs`` with the best validation accuracy (the first on a tie)
    when a validation split is given, else 1.0; the model is fitted on the training split
    only, so the validation split stays unseen by the final weights. Returns ``accuracy``,
    ``f1_macro``, ``balanced_accuracy``, ``count`` for the test split, ``val_accuracy``
    (when given, per C under ``val_accuracy_by_c``), ``C``, ``features`` and ``seconds``.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    _check_pair(train_texts, train_labels, "train")
    _check_pair(test_texts, test_labels, "test")
    if (val_texts is None) != (val_labels is None):
        raise ValueError("give both val_texts and val_labels, or neither")
    if val_texts is not None:
        _check_pair(val_texts, val_labels, "val")  # type: ignore[arg-type]
    if not cs:
        raise ValueError("cs: give at least one value of C")

    t0 = time.perf_counter()
    vectorizer = TfidfVectorizer(
        ngram_range=ngram_range, min_df=min_df, sublinear_tf=True, token_pattern=r"(?u)\b\w+\b"
    )
    x_train = vectorizer.fit_transform(train_texts)  # fitted on train only

    def fit(c: float) -> LogisticRegression:
        return LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(
            x_train, list(train_labels)
        )

    result: dict[str, Any] = {}
    if val_texts is not None:
        x_val = vectorizer.transform(val_texts)
        by_c = {float(c): accuracy_score(list(val_labels), fit(c).predict(x_val)) for c in cs}  # type: ignore[arg-type]
        best_c = max(by_c, key=lambda c: (by_c[c], -list(by_c).index(c)))
        result["val_accuracy"] = by_c[best_c]
        result["val_accuracy_by_c"] = by_c
    else:
        best_c = 1.0
    model = fit(best_c)
    pred = model.predict(vectorizer.transform(test_texts))
    truth = list(test_labels)
    return {
        "model": f"tfidf word {ngram_range[0]}-{ngram_range[1]} grams + logistic regression",
        "accuracy": float(accuracy_score(truth, pred)),
        "f1_macro": float(f1_score(truth, pred, average="macro")),
        "balanced_accuracy": float(balanced_accuracy_score(truth, pred)),
        "count": len(truth),
        "C": best_c,
        "features": len(vectorizer.vocabulary_),
        **result,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _check_pair(texts: Sequence[str], labels: Sequence[Hashable], split: str) -> None:
    if len(texts) != len(labels):
        raise ValueError(f"{split}: {len(texts)} texts but {len(labels)} labels")
    if not len(texts):
        raise ValueError(f"{split}: no texts")

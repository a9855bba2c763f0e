"""Answer metrics of extractive QA (SQuAD's): normalised exact match and token F1, and
ranking metrics of re-ranking (MRR@k, recall@k). Plain Python, no torch."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_PUNCT = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def token_f1(prediction: str, reference: str) -> float:
    """Token F1 of the normalised answers; two empty answers agree (1.0)."""
    pred = normalize_answer(prediction).split()
    ref = normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def best_over(metric, prediction: str, references: Sequence[str]) -> float:
    """The metric against the closest reference; no references means "no answer" is right."""
    if not references:
        return float(not prediction.strip())
    return max(metric(prediction, r) for r in references)


def reciprocal_rank(rank: int | None, k: int = 10) -> float:
    """``1 / rank`` (ranks from 1) when the relevant item is within the first ``k``, else 0."""
    return 1.0 / rank if rank is not None and rank <= k else 0.0

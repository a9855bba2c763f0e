"""Deterministic, seeded train/val/test splits."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from longmm.errors import DataError


def split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Counts for each fraction; rounding remainders go to the first split."""
    if any(f < 0 for f in fractions) or not 0.999 <= sum(fractions) <= 1.001:
        raise DataError("data.split", f"fractions must be >= 0 and sum to 1, got {list(fractions)}")
    counts = [int(round(n * f)) for f in fractions]
    counts[0] += n - sum(counts)
    return counts


def seeded_split(n: int, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Shuffle ``range(n)`` with ``seed`` and cut it by ``fractions``; same inputs, same split."""
    order = np.random.default_rng(seed).permutation(n)
    bounds = np.cumsum([0, *split_counts(n, fractions)])
    return [np.sort(order[a:b]) for a, b in itertools.pairwise(bounds)]

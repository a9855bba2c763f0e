"""Hybrid retrieval: reciprocal rank fusion of the BM25 and the dense rankings. On a large
collection the dense model reads only BM25's best chunks, so a 1M-token document is ranked
in seconds on two cores."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from longmm.reading.retrieve.base import ChunkIndex, Progress
from longmm.reading.retrieve.bm25 import BM25Ranker
from longmm.reading.retrieve.dense import DenseRanker


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[int]], k: int = 60, weights: Sequence[float] | None = None
) -> list[tuple[int, float]]:
    """Fuse rankings (lists of ids, best first): score(id) = sum_r w_r / (k + rank_r(id)),
    ranks from 1. Returns ``(id, score)`` best first (ties: the better best rank)."""
    weights = weights or [1.0] * len(rankings)
    scores: dict[int, float] = {}
    best: dict[int, int] = {}
    for w, ranking in zip(weights, rankings, strict=True):
        for rank, i in enumerate(ranking, 1):
            scores[i] = scores.get(i, 0.0) + w / (k + rank)
            best[i] = min(best.get(i, rank), rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], best[kv[0]], kv[0]))


class HybridRanker:
    """The ``hybrid`` strategy: the reciprocal rank fusion (``rrf_k``) of BM25's best
    ``depth`` chunks and the dense ranking. On a collection of more than ``dense_all_max``
    chunks the dense model ranks only BM25's candidates; on a smaller one, or when no
    question word is in any chunk, it reads every chunk."""

    def __init__(self, dense: DenseRanker, dense_all_max: int = 2000, rrf_k: int = 60) -> None:
        self.lexical = BM25Ranker()
        self.dense = dense
        self.dense_all_max = dense_all_max
        self.rrf_k = rrf_k

    def rank(
        self, question: str, index: ChunkIndex, depth: int, progress: Progress | None = None
    ) -> list[tuple[int, float]]:
        n = index.n_chunks
        lexical = self.lexical.rank(question, index, depth)
        if n <= self.dense_all_max or lexical[0][1] <= 0:
            # Small collections, or no question word in any chunk: BM25 cannot pick the
            # candidates, so the dense model reads every chunk.
            pool = np.arange(n)
            lexical = [(i, s) for i, s in lexical if s > 0]
        else:
            pool = np.array([i for i, _ in lexical])
        dense = self.dense.rank_pool(question, index, pool, depth, progress)
        fused = reciprocal_rank_fusion(
            [[i for i, _ in lexical], [i for i, _ in dense]], k=self.rrf_k
        )
        return fused[:depth]

"""The retrieval interface: every strategy is a ranker, the reader ranks through them, and the
re-ranking ranker puts boilerplate last and re-orders its first ranker's best chunks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from longmm.reading import text_document
from longmm.reading.reader import RetrievalReader
from longmm.reading.retrieve import (
    BM25Ranker,
    DenseRanker,
    HybridRanker,
    Ranker,
    top_k,
)
from longmm.reading.retrieve.rerank import RerankRanker

LEASE = """# Lease

## Rent

The tenant pays a monthly rent of 1,450 euros. Late payment incurs a fee of 40 euros.

## Repairs

The landlord repairs the heating. The tenant repairs damage caused by guests.

## References

Late payment fees, a study. Journal of Rent, 2019. The fee of 40 euros was proposed there.
"""
QUESTION = "What is the late payment fee?"


class ReverseScores:
    """A re-ranker that prefers the chunks the first ranking put last."""

    def score(self, question: str, texts: Sequence[str]) -> np.ndarray:
        return np.arange(len(texts), dtype=np.float32)


@pytest.mark.parametrize(
    ("strategy", "kind"), [("bm25", BM25Ranker), ("dense", DenseRanker), ("hybrid", HybridRanker)]
)
def test_each_strategy_is_a_ranker(strategy: str, kind: type) -> None:
    reader = RetrievalReader(strategy=strategy)  # type: ignore[arg-type]
    first = reader.first_ranker()
    assert isinstance(first, kind) and isinstance(first, Ranker)
    ranker = reader.ranker()
    assert isinstance(ranker, RerankRanker) and ranker.first.__class__ is kind


def test_bm25_ranker_and_the_reader_rank_alike() -> None:
    reader = RetrievalReader(strategy="bm25", top_k=1, rerank_depth=3)
    index = reader.index([text_document(LEASE, "lease.md", markdown=True)])
    depth = reader.depth(index)
    assert depth == min(index.n_chunks, 4)
    expected = top_k(index.bm25.scores(QUESTION), depth)
    assert (
        BM25Ranker().rank(QUESTION, index, depth) == expected == reader.first_rank(QUESTION, index)
    )


def test_rerank_ranker_puts_boilerplate_last_then_reorders_the_head() -> None:
    reader = RetrievalReader(strategy="bm25", rerank_depth=10)
    index = reader.index([text_document(LEASE, "lease.md", markdown=True)])
    assert index.boilerplate.any()  # the reference list
    first = reader.first_rank(QUESTION, index)
    plain = reader.rank(QUESTION, index)
    assert sorted(plain) == sorted(first)
    flags = [bool(index.boilerplate[c]) for c, _ in plain]
    assert flags == sorted(flags)  # content chunks first, boilerplate after
    reader.reranker, reader.rerank_candidates = ReverseScores(), 2
    reranked = reader.rank(QUESTION, index)
    assert [c for c, _ in reranked] == [plain[1][0], plain[0][0]] + [c for c, _ in plain[2:]]
    assert reranked == RerankRanker(BM25Ranker(), ReverseScores(), 2).rank(
        QUESTION, index, reader.depth(index)
    )

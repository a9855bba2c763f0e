"""Retrieval over chunks, one interface (:class:`Ranker`) for every strategy: ``bm25``
(bm25s), ``dense`` (MiniLM embeddings on PyTorch or ONNX Runtime, optionally int8),
``hybrid`` (reciprocal rank fusion of both) and re-ranking by a cross-encoder around any of
them. Each ranks the chunks of an index for a question and returns ``(chunk id, score)``
pairs, best first.

The re-ranking ranker and its cross-encoder are imported from
:mod:`longmm.reading.retrieve.rerank`, not from here: the cross-encoder is a
:class:`~longmm.reading.pair_model.PairModel` (shared with the answer model), which builds on
this package's base and ONNX modules, so re-exporting it here would be an import loop."""

from longmm.reading.retrieve.base import (
    BACKENDS,
    Backend,
    ChunkIndex,
    Progress,
    Ranker,
    cache_dir,
    resolve_backend,
    top_k,
)
from longmm.reading.retrieve.bm25 import BM25Ranker, BM25Retriever, LexicalTokenizer
from longmm.reading.retrieve.dense import DenseEncoder, DenseRanker, EmbeddingCache
from longmm.reading.retrieve.hybrid import HybridRanker, reciprocal_rank_fusion
from longmm.reading.retrieve.onnx import export_onnx

__all__ = [
    "BACKENDS",
    "BM25Ranker",
    "BM25Retriever",
    "Backend",
    "ChunkIndex",
    "DenseEncoder",
    "DenseRanker",
    "EmbeddingCache",
    "HybridRanker",
    "LexicalTokenizer",
    "Progress",
    "Ranker",
    "cache_dir",
    "export_onnx",
    "reciprocal_rank_fusion",
    "resolve_backend",
    "top_k",
]

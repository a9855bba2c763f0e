"""The one retrieval interface: a :class:`Ranker` ranks the chunks of an index for a question.

Every strategy (``bm25``, ``dense``, ``hybrid``, and re-ranking around any of them) is a
ranker: ``rank(question, index, depth, progress)`` returns ``(chunk id, score)`` pairs, best
first, at most ``depth`` of them (a re-ranker may return more: the chunks its first ranker
gave). Also here: the helpers they share (:func:`top_k`, the dense backends, the cache
folder ``$LONGMM_CACHE`` or ``~/.cache/longmm``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

Backend = Literal["auto", "torch", "onnx", "onnx-int8"]
BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
# progress(stage, done, total): stage is "chunk" or "embed".
Progress = Callable[[str, int, int], None]


class ChunkIndex(Protocol):
    """What a ranker reads of an index (a :class:`~longmm.reading.reader.DocumentIndex`):
    the chunk texts retrieval reads, BM25 over them, their embedding cache, and which
    chunks are boilerplate (reference lists, page furniture)."""

    chunk_texts: list[str]
    bm25: Any  # a BM25Retriever
    chunk_vectors: Any  # an EmbeddingCache of chunk_texts
    boilerplate: np.ndarray  # (C,) bool

    @property
    def n_chunks(self) -> int: ...


@runtime_checkable
class Ranker(Protocol):
    """Ranks the chunks of ``index`` for ``question``: ``(chunk id, score)`` best first."""

    def rank(
        self, question: str, index: ChunkIndex, depth: int, progress: Progress | None = None
    ) -> list[tuple[int, float]]: ...


def top_k(scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    """Indices and values of the ``k`` largest scores, best first (ties: lower index)."""
    k = min(k, len(scores))
    if k <= 0:
        return []
    part = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    order = sorted(part.tolist(), key=lambda i: (-float(scores[i]), i))
    return [(i, float(scores[i])) for i in order]


def stage(progress: Progress | None, name: str) -> Callable[[int, int], None] | None:
    """``progress`` for one stage, as ``(done, total)``."""
    if progress is None:
        return None
    return lambda done, total: progress(name, done, total)


def resolve_backend(backend: str, quantized: bool = True) -> Backend:
    """The backend ``auto`` stands for here: ``onnx-int8`` (``onnx`` when not ``quantized``)
    when onnxruntime is installed, else ``torch``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        try:
            import onnxruntime  # noqa: F401

            return "onnx-int8" if quantized else "onnx"
        except ImportError:
            return "torch"
    return backend  # type: ignore[return-value]


def cache_dir() -> Path:
    return Path(os.environ.get("LONGMM_CACHE") or Path.home() / ".cache" / "longmm")

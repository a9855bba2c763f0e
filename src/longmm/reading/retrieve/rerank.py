"""Re-ranking: the cross-encoder (:class:`CrossEncoder`, trained by ``recipes/reranker.yaml``;
see :mod:`longmm.reading.pair_model` for the models a user may bring) reads the question with
each of a first ranker's best chunks and orders them by its relevance scores."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from longmm.reading.pair_model import Kind, PairModel
from longmm.reading.pairs import encode_pairs
from longmm.reading.retrieve.base import Backend, ChunkIndex, Progress, Ranker


class CrossEncoder(PairModel):
    """Scores how well each passage answers the question (higher is better)."""

    kind: Kind = "rerank"
    # int8 weights move its scores by about a logit (median over Qasper's candidates) and
    # change its top passage on 29 % of questions: float32 ONNX unless asked for int8.
    quantize_by_default = False

    def __init__(self, source=None, backend: Backend = "auto", max_length: int = 160, **kw):
        super().__init__(source, backend, **kw)
        self.max_length = max_length

    def score(self, question: str, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts),)`` relevance scores."""
        if not texts:
            return np.zeros(0, dtype=np.float32)
        rows, types = encode_pairs(self.tokenizer, question, texts, self.max_length)
        order = np.argsort([len(r) for r in rows], kind="stable")
        out = np.zeros(len(rows), dtype=np.float32)
        for b in range(0, len(order), self.batch_size):
            idx = order[b : b + self.batch_size]
            (logits,) = self.run([rows[i] for i in idx], [types[i] for i in idx])
            out[idx] = relevance(logits)
        return out


def relevance(logits: np.ndarray) -> np.ndarray:
    """One score per row: the logit of a one-label head, else "relevant" minus "not"."""
    logits = logits.reshape(len(logits), -1)
    return logits[:, 0] if logits.shape[1] == 1 else logits[:, -1] - logits[:, 0]


class RerankRanker:
    """Wraps a first ranker: its ranking with boilerplate chunks (reference lists, page
    furniture) after every content chunk, then its best ``candidates`` re-ordered by
    ``reranker`` (a :class:`CrossEncoder`, or anything with ``score(question, texts)``; none:
    no re-ordering); the rest follow in their first order."""

    def __init__(self, first: Ranker, reranker: Any | None = None, candidates: int = 40) -> None:
        self.first = first
        self.reranker = reranker
        self.candidates = candidates

    def rank(
        self, question: str, index: ChunkIndex, depth: int, progress: Progress | None = None
    ) -> list[tuple[int, float]]:
        ranked = self.first.rank(question, index, depth, progress)
        if len(index.boilerplate) and index.boilerplate.any():
            # Reference lists and page furniture go after every content chunk.
            ranked = [r for r in ranked if not index.boilerplate[r[0]]] + [
                r for r in ranked if index.boilerplate[r[0]]
            ]
        if self.reranker is None or not ranked:
            return ranked
        head = ranked[: self.candidates]
        scores = self.reranker.score(question, [index.chunk_texts[c] for c, _ in head])
        order = sorted(range(len(head)), key=lambda i: (-float(scores[i]), i))
        return [(head[i][0], float(scores[i])) for i in order] + ranked[len(head) :]

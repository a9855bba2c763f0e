"""The extractive answer model (:class:`AnswerModel`, trained by ``recipes/answer_qa.yaml``;
see :mod:`longmm.reading.pair_model` for the models a user may bring), and the decoding of its
start and end scores into an answer (numpy only).

A window is ``[CLS] question [SEP] context piece [SEP]``; the model scores every token as
the answer's start and end, and ``[CLS]`` stands for "no answer". A span ``i..j`` (context
tokens, ``j - i < max_tokens``) scores ``start[i] + end[j]``; over all windows of a
question, the answer is the best span, and its margin is that score minus the lowest
"no answer" score of any window (the SQuAD 2.0 convention: one window that surely lacks the
answer does not veto a span found in another). A calibrated threshold on the margin decides
between the span and "no answer".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from longmm.reading.answer.base import AnswerSpan, Evidence
from longmm.reading.pair_model import Kind, PairModel
from longmm.reading.pairs import qa_windows, window_rows
from longmm.reading.retrieve.base import Backend


@dataclass(frozen=True)
class DecodedSpan:
    """The best span of one question: its window, context character offsets and margin."""

    window: int
    start: int
    end: int
    score: float
    margin: float


def best_in_window(
    start: np.ndarray, end: np.ndarray, first: int, last: int, max_tokens: int
) -> tuple[float, int, int]:
    """The best ``(score, i, j)`` with ``first <= i <= j <= last`` and ``j - i < max_tokens``."""
    s = start[first : last + 1]
    e = end[first : last + 1]
    n = len(s)
    if n == 0:
        return float("-inf"), 0, 0
    pair = s[:, None] + e[None, :]  # (n, n): start i, end j
    i, j = np.indices((n, n))
    pair = np.where((j >= i) & (j - i < max_tokens), pair, -np.inf)
    flat = int(np.argmax(pair))
    bi, bj = divmod(flat, n)
    return float(pair[bi, bj]), first + bi, first + bj


def decode(
    starts: Sequence[np.ndarray],
    ends: Sequence[np.ndarray],
    offsets: Sequence[Sequence[tuple[int, int]]],
    context_from: Sequence[int],
    max_tokens: int = 30,
) -> DecodedSpan | None:
    """The best span over a question's windows (``None`` when no window has context)."""
    best: tuple[float, int, int, int] | None = None
    null = float("inf")
    for w, (s, e, offs, first) in enumerate(zip(starts, ends, offsets, context_from, strict=True)):
        null = min(null, float(s[0] + e[0]))
        last = max((k for k in range(first, len(offs)) if offs[k] != (0, 0)), default=-1)
        if last < first:
            continue
        score, i, j = best_in_window(np.asarray(s), np.asarray(e), first, last, max_tokens)
        if best is None or score > best[0]:
            best = (score, w, i, j)
    if best is None:
        return None
    score, w, i, j = best
    return DecodedSpan(w, offsets[w][i][0], offsets[w][j][1], score, score - null)


def best_threshold(margins: Sequence[float], answerable: Sequence[bool], f1: Sequence[float]):
    """The margin threshold that maximises mean F1 when a question is answered only above it:
    ``f1[i]`` is the span's F1 when answered; an unanswered question scores 1 if it has no
    answer, else 0. Returns ``(threshold, mean F1)``."""
    n = len(margins)
    if n == 0:
        return 0.0, 0.0
    order = np.argsort(-np.asarray(margins, dtype=np.float64))
    # start with nothing answered: the unanswerable questions are right
    score = float(sum(not a for a in answerable))
    best_score, best_t = score, float(np.max(margins)) + 1e-6
    for k in order:
        score += f1[k] - (0.0 if answerable[k] else 1.0)
        if score > best_score:
            best_score, best_t = score, float(margins[k]) - 1e-6
    return best_t, best_score / n


# -- the model ---------------------------------------------------------------------------------
class AnswerModel(PairModel):
    """Extractive answers (an ``AnswerExtractor``): every passage is read in overlapping
    windows with the question; the best span of all windows is the answer when its margin
    over "no answer" beats ``threshold`` (default: the one calibrated on the recipe's
    validation split, stored with the adapters; 0 for a folder), else ``None``."""

    kind: Kind = "qa"

    def __init__(
        self,
        source=None,
        backend: Backend = "auto",
        threshold: float | None = None,
        max_length: int | None = None,
        stride: int | None = None,
        max_answer_tokens: int | None = None,
        **kw,
    ) -> None:
        super().__init__(source, backend, **kw)
        meta = self.meta
        self.threshold = float(meta.get("null_threshold", 0.0) if threshold is None else threshold)
        self.max_length = int(max_length or meta.get("max_length", 256))
        self.stride = int(stride or meta.get("stride", 96))
        self.max_answer_tokens = int(max_answer_tokens or meta.get("max_answer_tokens", 30))

    def read(self, question: str, passages: Sequence[Evidence]) -> AnswerSpan | None:
        """The best span whatever its margin (``None`` without text)."""
        windows = []
        for pi, p in enumerate(passages):
            if p.text.strip():
                encs = qa_windows(self.tokenizer, question, p.text, self.max_length, self.stride)
                windows += window_rows(pi, encs, ())
        if not windows:
            return None
        starts: list[np.ndarray] = []
        ends: list[np.ndarray] = []
        for b in range(0, len(windows), self.batch_size):
            batch = windows[b : b + self.batch_size]
            start, end = self.run([w.ids for w in batch], [w.types for w in batch])
            for i, w in enumerate(batch):
                starts.append(start[i, : len(w.ids)])
                ends.append(end[i, : len(w.ids)])
        span = decode(
            starts,
            ends,
            [w.offsets for w in windows],
            [w.context_from for w in windows],
            self.max_answer_tokens,
        )
        if span is None:
            return None
        pi = windows[span.window].example
        p = passages[pi]
        return AnswerSpan(
            p.text[span.start : span.end], pi, p.start + span.start, p.start + span.end, span.margin
        )

    def extract(self, question: str, passages: Sequence[Evidence]) -> AnswerSpan | None:
        span = self.read(question, passages)
        if span is None or span.score <= self.threshold or not span.text.strip():
            return None
        return span

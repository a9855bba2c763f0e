"""Sentence-level extraction: :class:`BestSentence`, the zero-shot extractor (the evidence
sentence closest to the question: shared rare words, plus dense similarity when given), and
:class:`SentenceFocus`, which confines a span extractor to the best sentences."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from longmm.reading.answer.base import AnswerExtractor, AnswerSpan, Evidence
from longmm.reading.sentences import split_sentences

_WORD = re.compile(r"\w+")
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "to",
        "in",
        "on",
        "for",
        "and",
        "or",
        "but",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "do",
        "does",
        "did",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "that",
        "this",
        "these",
        "those",
        "it",
        "its",
        "by",
        "with",
        "as",
        "at",
        "from",
        "into",
        "than",
        "then",
        "there",
        "their",
        "they",
        "them",
        "he",
        "she",
        "his",
        "her",
        "we",
        "our",
        "you",
        "your",
        "i",
        "me",
        "my",
        "not",
        "no",
        "yes",
        "can",
        "could",
        "should",
        "would",
        "will",
        "shall",
        "may",
        "might",
        "must",
        "have",
        "has",
        "had",
        "about",
        "over",
        "under",
    ]
)


def content_words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


class BestSentence:
    """Zero-shot extraction: the evidence sentence that shares the most question words,
    weighted by their rarity among the evidence sentences (ties: the earlier passage), with
    ``similarity(question, sentences)`` (dense cosine, when given) added."""

    def __init__(self, similarity: Any | None = None, dense_weight: float = 1.0) -> None:
        self.similarity = similarity
        self.dense_weight = dense_weight

    def rank(self, question: str, passages: Sequence[Evidence]) -> list[AnswerSpan]:
        """Every sentence of the evidence as a span, best first."""
        cands: list[tuple[int, int, int]] = []  # (passage, start, end) in document offsets
        for pi, p in enumerate(passages):
            for s, e in split_sentences(p.text):
                cands.append((pi, p.start + s, p.start + e))
        if not cands:
            return []
        texts = [
            passages[pi].text[s - passages[pi].start : e - passages[pi].start] for pi, s, e in cands
        ]
        words = [set(content_words(t)) for t in texts]
        df = Counter(w for ws in words for w in ws)
        q = set(content_words(question))
        n = len(texts)
        lexical = np.array(
            [sum(math.log(1 + n / df[w]) for w in q & ws) for ws in words], dtype=np.float64
        )
        if lexical.max() > 0:
            lexical /= lexical.max()
        score = lexical
        if self.similarity is not None:
            score = score + self.dense_weight * np.asarray(self.similarity(question, texts))
        # Earlier (better-ranked) passages win ties.
        order = sorted(range(n), key=lambda i: (-score[i], cands[i][0], i))
        return [AnswerSpan(texts[i], *cands[i], float(score[i])) for i in order]

    def extract(self, question: str, passages: Sequence[Evidence]) -> AnswerSpan | None:
        ranked = self.rank(question, passages)
        return ranked[0] if ranked else None


class SentenceFocus:
    """Two-stage extraction, sentence then span: ``sentences`` ranks the evidence sentences
    (:class:`BestSentence`), and ``spans`` (the trained span head) reads only the ``top``
    best ones, each with ``context`` neighbouring sentences on either side of it inside its
    passage. A span reader given whole passages of long prose is tempted by every sentence
    in them; confined to the sentences that match the question it has far fewer wrong
    places to choose from. ``None`` when ``spans`` finds no span there."""

    def __init__(
        self, sentences: BestSentence, spans: AnswerExtractor, top: int = 2, context: int = 1
    ) -> None:
        if top < 1 or context < 0:
            raise ValueError(f"top must be >= 1 and context >= 0, got {top} and {context}")
        self.sentences = sentences
        self.spans = spans
        self.top = top
        self.context = context

    def focus(self, question: str, passages: Sequence[Evidence]) -> list[tuple[int, Evidence]]:
        """The focused pieces, best first: ``(passage index, piece)``; pieces of one passage
        that overlap are merged."""
        pieces: list[tuple[int, int, int]] = []  # (passage, start, end) in document offsets
        for best in self.sentences.rank(question, passages)[: self.top]:
            p = passages[best.evidence]
            bounds = [(p.start + s, p.start + e) for s, e in split_sentences(p.text)]
            k = next(i for i, (s, e) in enumerate(bounds) if s <= best.start < e)
            lo = bounds[max(0, k - self.context)][0]
            hi = bounds[min(len(bounds) - 1, k + self.context)][1]
            for n, (pi, s, e) in enumerate(pieces):
                if pi == best.evidence and s < hi and lo < e:
                    pieces[n] = (pi, min(s, lo), max(e, hi))
                    break
            else:
                pieces.append((best.evidence, lo, hi))
        return [
            (
                pi,
                replace(
                    passages[pi],
                    text=passages[pi].text[s - passages[pi].start : e - passages[pi].start],
                    start=s,
                    end=e,
                ),
            )
            for pi, s, e in pieces
        ]

    def extract(self, question: str, passages: Sequence[Evidence]) -> AnswerSpan | None:
        pieces = self.focus(question, passages)
        if not pieces:
            return None
        span = self.spans.extract(question, [piece for _, piece in pieces])
        if span is None:
            return None
        return replace(span, evidence=pieces[span.evidence][0])

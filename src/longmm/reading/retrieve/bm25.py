"""Lexical retrieval: Okapi BM25 (bm25s) over chunk texts, with an identifier-aware
tokenizer, and the ``bm25`` ranker."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from longmm.reading.retrieve.base import ChunkIndex, Progress, top_k


def _stemmer():
    try:
        import Stemmer

        return Stemmer.Stemmer("english")
    except ImportError:  # pragma: no cover - PyStemmer is a dependency
        return None


# A word, an identifier, a number, a version or a file name: ``Z_DEFAULT_COMPRESSION``,
# ``deflateInit2``, ``16384``, ``1.2.13``, ``zpipe.c``, ``UTF-8``.
_TOKEN = re.compile(r"\w+(?:[.\-]\w+)*")
_PIECES = re.compile(r"[._\-]+")
# The parts of an identifier: camelCase humps, runs of capitals, digits.
_PARTS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+|[^\W\d_]+")


QUESTION_WORDS = frozenset({"what", "which", "who", "whom", "whose", "when", "where", "why", "how"})


class LexicalTokenizer:
    """BM25's tokens: English words lower-cased, stop words dropped, Snowball-stemmed; an
    identifier, number or version also as it is typed (lower-cased, whole) besides its
    parts split at underscores, dots, hyphens, case changes and digits, so that
    ``Z_DEFAULT_COMPRESSION``, ``CHUNK`` and ``16384`` are found as the user types them and
    ``deflateInit`` also by ``deflate``."""

    def __init__(self) -> None:
        from bm25s.stopwords import STOPWORDS_EN

        # question words too: every question has one, no passage is about them
        self.stopwords = frozenset(STOPWORDS_EN) | QUESTION_WORDS
        self.stemmer = _stemmer()
        self._stems: dict[str, str] = {}

    def _stem(self, word: str) -> str:
        stem = self._stems.get(word)
        if stem is None:
            stem = self.stemmer.stemWord(word) if self.stemmer is not None else word
            self._stems[word] = stem
        return stem

    def __call__(self, text: str) -> list[str]:
        out: list[str] = []
        for m in _TOKEN.finditer(text):
            raw = m.group()
            parts = [p for piece in _PIECES.split(raw) for p in _PARTS.findall(piece)]
            if len(parts) > 1:
                out.append(raw.lower())
            for part in parts:
                low = part.lower()
                if low in self.stopwords or (len(low) < 2 and not low.isdigit()):
                    continue
                out.append(low if low[0].isdigit() else self._stem(low))
        return out


class BM25Retriever:
    """Okapi BM25 (bm25s) over chunk texts, tokenized by :class:`LexicalTokenizer`.

    ``texts`` may differ from the chunk texts: the reader indexes each chunk with its section
    path in front, so that a question about "the dataset" also finds the chunks of the
    section "Dataset" that never repeat the word.
    """

    def __init__(self, texts: Sequence[str], k1: float = 1.2, b: float = 0.75) -> None:
        import bm25s

        self.tokenize = LexicalTokenizer()
        self.n = len(texts)
        self.model = bm25s.BM25(k1=k1, b=b)
        self.model.index([self.tokenize(t) for t in texts], show_progress=False)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every chunk for ``query``: ``(n,)``."""
        q = self.tokenize(query)
        if not q:
            return np.zeros(self.n, dtype=np.float32)
        return np.asarray(self.model.get_scores(q), dtype=np.float32)

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        return top_k(self.scores(query), k)


class BM25Ranker:
    """The ``bm25`` strategy: the index's BM25 scores, the best ``depth`` chunks."""

    def rank(
        self, question: str, index: ChunkIndex, depth: int, progress: Progress | None = None
    ) -> list[tuple[int, float]]:
        return top_k(index.bm25.scores(question), depth)

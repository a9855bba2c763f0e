"""What a reader returns, and the interface of answer extraction.

A reader answers a question about documents with an :class:`Answer`: the answer text, the
evidence passages it read (each citing its document by character offsets, page and section)
and the time it took. An :class:`AnswerExtractor` turns the question and the evidence into
an :class:`AnswerSpan`; :class:`FirstAnswer` chains extractors, keeping the first answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from longmm.reading.sentences import split_sentences


@dataclass(frozen=True)
class Evidence:
    """A passage a reader read: ``text == documents[doc].text[start:end]``.

    ``source`` names the document, ``page`` is the first page (``None`` without pages),
    ``section`` the heading path, ``score`` the retrieval score (higher is better; its scale
    depends on the strategy), ``chunks`` the indices of the chunks it was built from,
    ``last_page`` the page it ends on.
    """

    text: str
    source: str
    start: int
    end: int
    doc: int = 0
    page: int | None = None
    section: tuple[str, ...] = ()
    score: float = 0.0
    chunks: tuple[int, ...] = ()
    last_page: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "source": self.source,
            "start": self.start,
            "end": self.end,
            "page": self.page,
            "last_page": self.page if self.last_page is None else self.last_page,
            "section": " > ".join(self.section),
            "score": round(float(self.score), 6),
        }


@dataclass(frozen=True)
class AnswerSpan:
    """An answer found in the evidence: ``text == evidence[evidence].text[start - e.start:
    end - e.start]``; ``start``/``end`` are offsets in the document's text."""

    text: str
    evidence: int
    start: int
    end: int
    score: float = 0.0
    page: int | None = None  # the page the answer starts on (set by the reader)


@dataclass
class Answer:
    """A reader's answer: the text (empty when nothing was found), its span when it was
    extracted from the evidence, the evidence passages best first, and seconds taken."""

    answer: str
    evidence: list[Evidence] = field(default_factory=list)
    seconds: float = 0.0
    span: AnswerSpan | None = None
    question: str = ""
    strategy: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    citations: list[int] | None = None  # passage numbers a generated answer cites

    def sentence(self) -> str:
        """The evidence sentence(s) the answer span lies in (``""`` without a span), so that
        a short answer can be judged in its context."""
        if self.span is None:
            return ""
        ev = self.evidence[self.span.evidence]
        a, b = self.span.start - ev.start, self.span.end - ev.start
        bounds = [(s, e) for s, e in split_sentences(ev.text) if s < b and a < e]
        if not bounds:
            return self.span.text
        return ev.text[bounds[0][0] : bounds[-1][1]]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "question": self.question,
            "answer": self.answer,
            "strategy": self.strategy,
            "evidence": [e.to_json() for e in self.evidence],
            "seconds": round(self.seconds, 4),
        }
        if self.span is not None:
            ev = self.evidence[self.span.evidence]
            out["answer_span"] = {
                **asdict(self.span),
                "source": ev.source,
                "page": ev.page if self.span.page is None else self.span.page,
                "sentence": self.sentence(),
            }
        if self.citations is not None:
            out["citations"] = list(self.citations)
        if self.timings:
            out["timings"] = {k: round(v, 4) for k, v in self.timings.items()}
        return out


@runtime_checkable
class AnswerExtractor(Protocol):
    """Finds the answer to ``question`` in ``passages`` (best first); ``None`` when it finds
    none. Span offsets are in the passage's document (``passage.start`` based)."""

    def extract(self, question: str, passages: Sequence[Evidence]) -> AnswerSpan | None: ...


class FirstAnswer:
    """Asks each extractor in turn and keeps the first answer: for example the span head with
    a confidence threshold, then the best sentence when the head finds no confident span."""

    def __init__(self, *extractors: AnswerExtractor) -> None:
        if not extractors:
            raise ValueError("FirstAnswer needs at least one extractor")
        self.extractors = extractors

    def extract(self, question: str, passages: Sequence[Evidence]) -> AnswerSpan | None:
        for extractor in self.extractors:
            span = extractor.extract(question, passages)
            if span is not None:
                return span
        return None

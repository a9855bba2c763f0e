"""Answers from evidence: what a reader returns (:class:`Answer`, :class:`Evidence`,
:class:`AnswerSpan`), the :class:`AnswerExtractor` interface, and the extractors: the best
sentence (:mod:`~longmm.reading.answer.sentence`), the extractive QA model
(:mod:`~longmm.reading.answer.qa_model`), the span head
(:mod:`~longmm.reading.answer.span_head`) and a local causal LM that writes the answer
(:mod:`~longmm.reading.answer.generator`). Those last three run models: import them from
their modules (this package stays light to import)."""

from longmm.reading.answer.base import (
    Answer,
    AnswerExtractor,
    AnswerSpan,
    Evidence,
    FirstAnswer,
)
from longmm.reading.answer.sentence import (
    STOPWORDS,
    BestSentence,
    SentenceFocus,
    content_words,
)

__all__ = [
    "STOPWORDS",
    "Answer",
    "AnswerExtractor",
    "AnswerSpan",
    "BestSentence",
    "Evidence",
    "FirstAnswer",
    "SentenceFocus",
    "content_words",
]

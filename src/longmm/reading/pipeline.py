"""The reader ``longmm read`` and ``POST /read`` use, assembled from its parts.

1. The first ranking (``bm25``, ``dense`` or ``hybrid``) proposes candidate chunks.
2. The cross-encoder re-ranker (:class:`~longmm.reading.retrieve.rerank.CrossEncoder`,
   trained by ``recipes/reranker.yaml``) orders the best ``rerank_candidates`` of them.
3. The best chunks grow into evidence passages (:class:`~longmm.reading.reader.RetrievalReader`).
4. The answer: ``span`` (default) asks the span head trained on generated fact questions
   (``recipes/span_head.yaml``) to read the best evidence sentences, its span kept when it
   beats "no answer", else the best evidence sentence; ``qa`` asks the extractive answer
   model trained on real questions (:class:`~longmm.reading.answer.qa_model.AnswerModel`,
   ``recipes/answer_qa.yaml``) for its best span over the evidence, kept when it beats the
   calibrated "no answer" score, else the best sentence; ``sentence`` gives the best sentence
   alone. Figures and clips of multimodal documents are answered by their encoders in every
   mode but ``sentence``. (``qa`` answers real questions better than the span head, but
   after one CPU hour of training it misreads generated facts such as pass keys, which the
   needle benchmarks rely on; it becomes the default once it reads both: docs/results.md.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from longmm.reading.answer.base import FirstAnswer
from longmm.reading.answer.sentence import BestSentence, SentenceFocus
from longmm.reading.reader import RetrievalReader, Strategy

ANSWERS = ("span", "qa", "sentence")
DEFAULT_ANSWER = "span"  # what `longmm read`, its benchmarks and the needle bench use
SPAN_HEAD_MIN_MARGIN = 0.0  # a span-head answer must beat its "no answer" score


def build_reader(
    answer: str = DEFAULT_ANSWER,
    strategy: Strategy = "hybrid",
    rerank: bool = True,
    reranker: str | Path | None = None,
    answer_model: str | Path | None = None,
    generator: str | Path | None = None,
    max_new_tokens: int = 200,
    **options: Any,
) -> Any:
    """The reader for ``answer`` mode (see the module doc). ``rerank=False`` skips the
    re-ranker; ``reranker`` / ``answer_model`` name other models (a local Hugging Face
    folder, an adapter file or a run folder of our recipes; default: the packaged ones).
    Other options go to :class:`RetrievalReader` (``backend`` also runs the two models).
    ``generator`` (a local Hugging Face causal LM folder) writes the answer text from the
    evidence instead, at most ``max_new_tokens`` tokens
    (:class:`~longmm.reading.answer.generator.GeneratingReader`)."""
    if answer not in ANSWERS:
        raise ValueError(f"answer must be one of {ANSWERS}, got {answer!r}")
    if generator is not None:
        from longmm.reading.answer.generator import GeneratingReader, Generator

        writer = Generator(generator, max_new_tokens=max_new_tokens)  # a bad folder fails first
        evidence = build_reader(answer, strategy, rerank, reranker, answer_model, **options)
        return GeneratingReader(evidence, writer)
    backend = options.get("backend", "auto")
    if rerank or reranker is not None:
        from longmm.reading.retrieve.rerank import CrossEncoder

        options["reranker"] = CrossEncoder(reranker, backend=backend)
    if answer == "sentence":
        return RetrievalReader(strategy=strategy, **options)
    from longmm.reading.multimodal import MultimodalReader

    sentence = BestSentence()
    if answer == "qa" or answer_model is not None:
        from longmm.reading.answer.qa_model import AnswerModel

        text = FirstAnswer(AnswerModel(answer_model, backend=backend), sentence)
    else:
        from longmm.reading.answer.span_head import SpanExtractor

        focus = SentenceFocus(sentence, SpanExtractor(min_score=SPAN_HEAD_MIN_MARGIN))
        text = FirstAnswer(focus, sentence)
    reader = MultimodalReader(strategy=strategy, extractor=text, **options)
    if strategy != "bm25":
        sentence.similarity = lambda q, texts: reader.reader.encoder.similarity(q, texts)
    return reader

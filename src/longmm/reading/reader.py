"""The retrieval reader: find the evidence for a question in long documents, then the answer.

Pipeline: chunk every document (sentence- and section-aligned, token-bounded), rank the
chunks for the question with the ranker of the reader's strategy (:mod:`longmm.reading.retrieve`:
``bm25``, ``dense`` or ``hybrid`` = reciprocal rank fusion of both, boilerplate last, and the
best re-ordered by a cross-encoder when there is one), grow the best chunks into evidence
passages (query-aware expansion: neighbouring sentences of the same section, the more relevant
side first, up to ``passage_tokens``; chunks that fall inside a passage already chosen join
it), and extract the answer from the evidence with an
:class:`~longmm.reading.answer.AnswerExtractor` (by default the best evidence sentence).

The index of a collection is built once (:meth:`RetrievalReader.index`) and answers any
number of questions. On a long document, hybrid ranking embeds only BM25's best
``rerank_depth`` chunks (all chunks when there are at most ``dense_all_max`` of them), so a
1M-token document is read in seconds on two cores.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from longmm.errors import DataError
from longmm.reading.answer.base import Answer, AnswerExtractor, Evidence
from longmm.reading.answer.sentence import BestSentence
from longmm.reading.boilerplate import is_boilerplate, strip_citations
from longmm.reading.document import Chunk, Document
from longmm.reading.enhance import Chunker, Segmented, Unit
from longmm.reading.ingest import load_document
from longmm.reading.retrieve.base import Backend, Progress, Ranker, stage, top_k
from longmm.reading.retrieve.bm25 import BM25Ranker, BM25Retriever
from longmm.reading.retrieve.dense import DenseEncoder, DenseRanker, EmbeddingCache
from longmm.reading.retrieve.hybrid import HybridRanker
from longmm.reading.retrieve.rerank import RerankRanker

Strategy = Literal["bm25", "dense", "hybrid"]
STRATEGIES = ("bm25", "dense", "hybrid")


@dataclass
class DocumentIndex:
    """Documents indexed for retrieval: their chunks and units (sentences and whole small
    blocks) with BM25 over the chunks and embedding caches for chunks and units.

    Units of all documents are numbered together: document ``d`` owns units
    ``unit_base[d]:unit_base[d + 1]``; ``chunk_units[c]`` is the first and last unit of chunk
    ``c``; ``section[u]`` numbers the section of unit ``u`` (its document's headings counted).
    """

    documents: list[Document]
    chunks: list[Chunk]
    chunk_texts: list[str]
    bm25: BM25Retriever
    units: list[Unit]
    unit_doc: np.ndarray  # (U,)
    unit_base: np.ndarray  # (D + 1,)
    section: np.ndarray  # (U,)
    chunk_units: np.ndarray  # (C, 2)
    chunk_vectors: EmbeddingCache
    unit_vectors: EmbeddingCache
    boilerplate: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # (C,)
    seconds: float = 0.0
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def n_chunks(self) -> int:
        return len(self.chunks)

    def unit_text(self, u: int) -> str:
        unit = self.units[u]
        return self.documents[int(self.unit_doc[u])].text[unit.start : unit.end]


class RetrievalReader:
    """Answers questions about documents from retrieved evidence passages.

    ``strategy``: ``bm25``, ``dense`` or ``hybrid``. ``top_k`` evidence passages are
    returned, each at most ``passage_tokens`` tokens around a retrieved chunk. ``chunker``
    defaults to 64-token chunks with a 16-token sentence overlap (small chunks rank more
    precisely; the evidence grows around them). ``extractor`` finds the
    answer in the evidence (default :class:`BestSentence`, dense-aided unless ``bm25``).
    ``backend`` runs the dense encoder (``auto``: int8 ONNX when onnxruntime is there).
    ``reranker`` (a :class:`~longmm.reading.retrieve.rerank.CrossEncoder`, or anything with
    ``score(question, texts)``) re-orders the best ``rerank_candidates`` chunks of the first
    ranking by its relevance scores; the rest follow in their first order. The rankings come
    from the rankers of :mod:`longmm.reading.retrieve` (:meth:`ranker`).
    """

    def __init__(
        self,
        strategy: Strategy = "hybrid",
        top_k: int = 3,
        chunker: Chunker | None = None,
        extractor: AnswerExtractor | None = None,
        encoder: DenseEncoder | None = None,
        backend: Backend = "auto",
        passage_tokens: int = 256,
        rerank_depth: int = 200,
        dense_all_max: int = 2000,
        rrf_k: int = 60,
        reranker: Any | None = None,
        rerank_candidates: int = 40,
    ) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        self.strategy = strategy
        self.top_k = top_k
        self.chunker = chunker or Chunker(max_tokens=64, overlap_tokens=16)
        if passage_tokens < self.chunker.max_tokens:
            raise ValueError(
                f"passage_tokens ({passage_tokens}) must be at least the chunk size "
                f"({self.chunker.max_tokens})"
            )
        self.passage_tokens = passage_tokens
        self.rerank_depth = rerank_depth
        self.dense_all_max = dense_all_max
        self.rrf_k = rrf_k
        self.reranker = reranker
        self.rerank_candidates = rerank_candidates
        self._encoder = encoder
        self._backend = backend
        if extractor is None:
            similarity = (
                None if strategy == "bm25" else (lambda q, t: self.encoder.similarity(q, t))
            )
            extractor = BestSentence(similarity=similarity)
        self.extractor = extractor

    @property
    def encoder(self) -> DenseEncoder:
        if self._encoder is None:
            self._encoder = DenseEncoder(backend=self._backend)
        return self._encoder

    # -- indexing -----------------------------------------------------------------------------
    def index(
        self,
        documents: Sequence[Document | str | Path] | Document | str | Path,
        progress: Progress | None = None,
    ) -> DocumentIndex:
        """Load (paths), chunk and index ``documents`` for any number of questions."""
        t0 = time.perf_counter()
        if isinstance(documents, Document | str | Path):
            documents = [documents]
        docs = [d if isinstance(d, Document) else load_document(d) for d in documents]
        if not docs:
            raise DataError("documents", "no documents to read")
        t_load = time.perf_counter()
        chunks: list[Chunk] = []
        segs: list[Segmented] = []
        for i, doc in enumerate(docs):
            seg = self.chunker.segment(doc)
            chunks.extend(self.chunker.chunk_units(seg, doc_index=i))
            segs.append(seg)
            if progress is not None:
                progress("chunk", i + 1, len(docs))
        if not chunks:
            raise DataError(docs[0].source, "no text to index")
        t_chunk = time.perf_counter()
        texts = [_index_text(c) for c in chunks]
        bm25 = BM25Retriever(texts)
        t_bm25 = time.perf_counter()
        index = _build_index(docs, segs, chunks, texts, bm25)
        if self.strategy == "dense" or (
            self.strategy == "hybrid" and len(chunks) <= self.dense_all_max
        ):
            index.chunk_vectors.embed(
                self.encoder, np.arange(len(chunks)), stage(progress, "embed")
            )
            index.unit_vectors.embed(self.encoder, np.arange(len(index.units)))
        t_end = time.perf_counter()
        index.seconds = t_end - t0
        index.stats = {
            "load_s": t_load - t0,
            "chunk_s": t_chunk - t_load,
            "bm25_index_s": t_bm25 - t_chunk,
            "embed_s": t_end - t_bm25,
            "chunks": len(chunks),
            "units": len(index.units),
        }
        return index

    # -- answering ----------------------------------------------------------------------------
    def answer(
        self,
        question: str,
        documents: DocumentIndex | Sequence[Document | str | Path] | Document | str | Path,
        progress: Progress | None = None,
    ) -> Answer:
        """Answer ``question`` from ``documents`` (an index, or documents to index first);
        ``seconds`` covers everything this call did, indexing included."""
        t0 = time.perf_counter()
        if not question or not question.strip():
            raise DataError("question", "empty question")
        index = (
            documents if isinstance(documents, DocumentIndex) else self.index(documents, progress)
        )
        t_index = time.perf_counter()
        ranked = self.rank(question, index, progress)
        t_rank = time.perf_counter()
        evidence = self.evidence(question, index, ranked)
        t_expand = time.perf_counter()
        span = self.extractor.extract(question, evidence) if evidence else None
        if span is not None:
            doc = index.documents[evidence[span.evidence].doc]
            span = replace(span, page=doc.page_at(span.start))
        t_end = time.perf_counter()
        timings = {
            "index_s": t_index - t0,
            "rank_s": t_rank - t_index,
            "expand_s": t_expand - t_rank,
            "extract_s": t_end - t_expand,
        }
        return Answer(
            answer=span.text if span is not None else "",
            evidence=evidence,
            seconds=t_end - t0,
            span=span,
            question=question,
            strategy=self.strategy,
            timings=timings,
        )

    def first_ranker(self) -> Ranker:
        """The ranker of this reader's strategy, as its settings are now."""
        if self.strategy == "bm25":
            return BM25Ranker()
        dense = DenseRanker(lambda: self.encoder)
        if self.strategy == "dense":
            return dense
        return HybridRanker(dense, dense_all_max=self.dense_all_max, rrf_k=self.rrf_k)

    def ranker(self) -> Ranker:
        """:meth:`first_ranker` with boilerplate last and the re-ranker, when there is one, on
        its best ``rerank_candidates``."""
        return RerankRanker(self.first_ranker(), self.reranker, self.rerank_candidates)

    def depth(self, index: DocumentIndex) -> int:
        """How many chunks the first ranking keeps: ``rerank_depth``, at least ``4 * top_k``."""
        return min(index.n_chunks, max(self.rerank_depth, 4 * self.top_k))

    def rank(
        self, question: str, index: DocumentIndex, progress: Progress | None = None
    ) -> list[tuple[int, float]]:
        """Chunks ``(id, score)`` best first: the first ranking (:meth:`first_rank`) with
        boilerplate chunks last, its best ``rerank_candidates`` re-ordered by the re-ranker
        when there is one."""
        return self.ranker().rank(question, index, self.depth(index), progress)

    def first_rank(
        self, question: str, index: DocumentIndex, progress: Progress | None = None
    ) -> list[tuple[int, float]]:
        """Chunks ``(id, score)`` best first: BM25 scores, dense cosines, or the reciprocal
        rank fusion of both (dense over BM25's best ``rerank_depth`` on large collections)."""
        return self.first_ranker().rank(question, index, self.depth(index), progress)

    def _query_vector(self, question: str) -> np.ndarray:
        return self.encoder.encode([question])[0]

    def relevance(
        self, question: str, index: DocumentIndex, ranked: Sequence[tuple[int, float]]
    ) -> dict[int, float]:
        """Relevance of the units inside the ranked chunks: the best reciprocal-rank score of
        a chunk that holds the unit, plus half the reciprocal-rank score of the unit's own
        dense similarity to the question (not for ``bm25``), so that the sentences that
        match best inside a good chunk anchor the evidence."""
        rel: dict[int, float] = {}
        for rank, (cid, _) in enumerate(ranked, 1):
            a, b = index.chunk_units[cid]
            for u in range(int(a), int(b) + 1):
                rel[u] = max(rel.get(u, 0.0), 1.0 / (self.rrf_k + rank))
        if self.strategy != "bm25" and rel:
            ids = np.fromiter(rel, dtype=np.int64)
            sims = index.unit_vectors.embed(self.encoder, ids) @ self._query_vector(question)
            for rank, (i, _) in enumerate(top_k(sims, len(ids)), 1):
                rel[int(ids[i])] += 0.5 / (self.rrf_k + rank)
        return rel

    # -- evidence -----------------------------------------------------------------------------
    def evidence(
        self, question: str, index: DocumentIndex, ranked: Sequence[tuple[int, float]]
    ) -> list[Evidence]:
        """``top_k`` passages: the most relevant units, each grown by its neighbours (see
        :meth:`_grow`); a unit inside a passage already chosen joins it."""
        rel = self.relevance(question, index, ranked)
        order = sorted(rel, key=lambda u: (-rel[u], u))
        passages: list[list[int]] = []  # [first unit, last unit, anchor]
        for u in order:
            if any(p[0] <= u <= p[1] for p in passages):
                continue
            if len(passages) >= self.top_k:
                break
            a, b = self._grow(index, u, rel)
            passages.append([a, b, u])
        out = []
        for a, b, u in passages:
            d = int(index.unit_doc[a])
            doc = index.documents[d]
            start, end = index.units[a].start, index.units[b].end
            chunk_ids = tuple(
                c
                for c, _ in ranked
                if index.chunk_units[c][0] <= b and index.chunk_units[c][1] >= a
            )
            out.append(
                Evidence(
                    text=doc.text[start:end],
                    source=doc.source,
                    start=start,
                    end=end,
                    doc=d,
                    page=doc.page_at(start),
                    last_page=doc.page_at(max(start, end - 1)),
                    section=doc.section_at(start),
                    score=rel[u],
                    chunks=chunk_ids,
                )
            )
        return out

    def _grow(self, index: DocumentIndex, u: int, rel: dict[int, float]) -> tuple[int, int]:
        """Query-aware expansion of unit ``u``: add the neighbouring unit of the same section
        (and document) that is more relevant, the following one on a tie, while the passage
        stays within ``passage_tokens``; a heading only as the passage's first unit."""
        units, section = index.units, index.section
        a = b = u
        size = units[u].n_tokens
        while True:
            options = []
            for side, i in ((1, b + 1), (0, a - 1)):
                if not 0 <= i < len(units) or section[i] != section[u]:
                    continue
                if side and units[i].kind == "heading":
                    continue
                if size + units[i].n_tokens <= self.passage_tokens:
                    options.append((rel.get(i, 0.0), side, i))
            if not options:
                return a, b
            _, side, i = max(options)
            size += units[i].n_tokens
            if side:
                b = i
            else:
                a = i


def _index_text(chunk: Chunk) -> str:
    """What retrieval reads for a chunk: its section path, then its text, without inline
    citation markers."""
    text = strip_citations(chunk.text)
    return f"{chunk.heading}\n{text}" if chunk.section else text


def _build_index(
    docs: list[Document],
    segs: list[Segmented],
    chunks: list[Chunk],
    texts: list[str],
    bm25: BM25Retriever,
) -> DocumentIndex:
    units: list[Unit] = []
    unit_doc: list[int] = []
    section: list[int] = []
    base = [0]
    sec = 0
    for d, seg in enumerate(segs):
        sec += 1  # a new document is a new section
        for unit in seg.units:
            sec += unit.kind == "heading"
            units.append(unit)
            unit_doc.append(d)
            section.append(sec)
        base.append(len(units))
    starts = np.array([u.start for u in units], dtype=np.int64)
    chunk_units = np.zeros((len(chunks), 2), dtype=np.int64)
    for c, chunk in enumerate(chunks):
        lo, hi = base[chunk.doc], base[chunk.doc + 1]
        own = starts[lo:hi]
        chunk_units[c, 0] = lo + np.searchsorted(own, chunk.start, side="right") - 1
        chunk_units[c, 1] = lo + np.searchsorted(own, chunk.end - 1, side="right") - 1
    index = DocumentIndex(
        documents=docs,
        chunks=chunks,
        chunk_texts=texts,
        bm25=bm25,
        boilerplate=np.array([is_boilerplate(c.text, c.section) for c in chunks], dtype=bool),
        units=units,
        unit_doc=np.array(unit_doc, dtype=np.int64),
        unit_base=np.array(base, dtype=np.int64),
        section=np.array(section, dtype=np.int64),
        chunk_units=chunk_units,
        chunk_vectors=EmbeddingCache(texts),
        unit_vectors=EmbeddingCache([]),
    )
    index.unit_vectors = EmbeddingCache(_LazyUnitTexts(index))
    return index


class _LazyUnitTexts(Sequence[str]):
    """Unit texts read from the documents when asked (no copy of a 1M-token text)."""

    def __init__(self, index: DocumentIndex) -> None:
        self.index = index

    def __len__(self) -> int:
        return len(self.index.units)

    def __getitem__(self, i):
        return self.index.unit_text(int(i))

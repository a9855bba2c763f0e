"""Ranking variants for the retrieval reader on Qasper (L-Eval): what moves the evidence hit rate.

For the 80 questions whose reference answer occurs word for word in the paper, each variant
ranks the paper's chunks; the reader's own evidence step (``RetrievalReader.evidence``: the
most relevant sentences grown inside their section, 256 tokens, top 3) turns the ranking into
passages, and a hit is a passage that contains the answer (case and spacing ignored, as in
``longmm bench qasper``). Chunk recall@k (a chunk that holds the answer among the first k) is
given beside it, to tell the ranking apart from the passage building.

Every variant is a general retrieval technique, measured on the whole set with the constants
the literature uses (nothing fitted to these questions):

- ``hybrid``: the reader as shipped (BM25 and MiniLM, reciprocal rank fusion); ``bm25`` and
  ``dense`` alone.
- ``rocchio``: pseudo-relevance feedback: the question vector moved toward the mean of the
  3 best fused chunks (beta 0.5), then fused with BM25 again.
- ``neighbours``: each chunk's fused score plus a quarter of its neighbours' (context across
  chunks).
- ``sections``: the fused score plus half the rank-fusion score of the chunk's section
  (sections ranked by their best BM25 chunk and their mean chunk vector).
- ``maxsim``: late interaction over MiniLM's token vectors (ColBERT-style: each question
  content token takes its best cosine in the chunk; mean, or IDF-weighted mean), alone and
  fused with BM25 and the dense ranking.
- ``meta-stripped``: words that name the paper itself ("in this paper", "they", "the
  authors") removed from the question.
- ``one-per-section``: at most one evidence passage from a section.
- ``passages-512`` and ``top-8``: more evidence, to show how far the ranking is from the
  target (not a fair comparison: more text).

Run from the repository root (under a minute on 2 cores), data folder and JSON out optional:
python benchmarks/qasper_ranking.py ../shared/data/leval_qasper out.json
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
import types
from collections.abc import Callable

import numpy as np
import torch

from longmm.bench.qasper import _squash, load_qasper
from longmm.encoders.pretrained import load_pretrained
from longmm.reading.answer.span_head import _content_vocab
from longmm.reading.ingest import text_document
from longmm.reading.pipeline import build_reader
from longmm.reading.reader import DocumentIndex, RetrievalReader
from longmm.reading.retrieve import reciprocal_rank_fusion, top_k

Ranking = list[tuple[int, float]]
Ranker = Callable[[str, DocumentIndex], Ranking]
DEPTH = 200
RECALL_AT = (1, 3, 5, 10, 20)
META = re.compile(
    r"\b(based on this paper|in this paper|this paper|in this work|this work|"
    r"the authors?|this study|the paper|their|they)\b",
    re.IGNORECASE,
)


def order(scores: np.ndarray) -> list[int]:
    return [i for i, _ in top_k(np.asarray(scores, dtype=np.float64), len(scores))]


class Signals:
    """The per-chunk scores the variants combine, cached per paper."""

    def __init__(self, reader: RetrievalReader) -> None:
        self.reader = reader
        self.encoder = reader.encoder
        self.model = load_pretrained(self.encoder.folder).eval()
        self.content = _content_vocab()
        self._tokens: dict[int, list[np.ndarray]] = {}
        self._df: dict[int, tuple[dict[int, int], int]] = {}

    def bm25(self, q: str, index: DocumentIndex) -> np.ndarray:
        return index.bm25.scores(q)

    def vectors(self, index: DocumentIndex) -> np.ndarray:
        return index.chunk_vectors.embed(self.encoder, np.arange(index.n_chunks))

    def dense(self, q: str, index: DocumentIndex) -> np.ndarray:
        return self.vectors(index) @ self.encoder.encode([q])[0]

    def token_vectors(self, texts: list[str]) -> list[np.ndarray]:
        """Unit-length MiniLM output vectors of each text's content tokens."""
        out = []
        encodings = self.encoder.tokenizer.encode_batch(texts)
        for b in range(0, len(encodings), 32):
            batch = encodings[b : b + 32]
            width = max(len(e.ids) for e in batch)
            ids = torch.zeros(len(batch), width, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, e in enumerate(batch):
                ids[r, : len(e.ids)] = torch.tensor(e.ids)
                mask[r, : len(e.ids)] = 1
            with torch.inference_mode():
                hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
            hidden = torch.nn.functional.normalize(hidden, dim=-1)
            for r, e in enumerate(batch):
                keep = [k for k, t in enumerate(e.ids) if t in self.content]
                out.append(hidden[r, keep or list(range(len(e.ids)))].numpy())
        return out

    def maxsim(self, q: str, index: DocumentIndex, idf: bool = False) -> np.ndarray:
        key = id(index)
        if key not in self._tokens:
            self._tokens[key] = self.token_vectors(index.chunk_texts)
            df: dict[int, int] = {}
            for e in self.encoder.tokenizer.encode_batch(index.chunk_texts):
                for t in set(e.ids):
                    df[t] = df.get(t, 0) + 1
            self._df[key] = (df, index.n_chunks)
        query = self.token_vectors([q])[0]
        ids = [t for t in self.encoder.tokenizer.encode(q).ids if t in self.content]
        weights = np.ones(len(query)) / len(query)
        if idf and len(ids) == len(query):
            df, n = self._df[key]
            w = np.array(
                [math.log(1 + (n - df.get(t, 0) + 0.5) / (df.get(t, 0) + 0.5)) for t in ids]
            )
            weights = w / w.sum()
        return np.array([(query @ d.T).max(1) @ weights for d in self._tokens[key]])


def variants(s: Signals) -> dict[str, tuple[Ranker, dict]]:
    reader = s.reader

    def fused(*parts: Callable[[str, DocumentIndex], np.ndarray]) -> Ranker:
        return lambda q, i: reciprocal_rank_fusion([order(p(q, i)) for p in parts])[:DEPTH]

    def rocchio(q: str, i: DocumentIndex) -> Ranking:
        vectors, bm = s.vectors(i), s.bm25(q, i)
        qv = s.encoder.encode([q])[0]
        first = reciprocal_rank_fusion([order(bm), order(vectors @ qv)])
        moved = qv + 0.5 * vectors[[c for c, _ in first[:3]]].mean(0)
        moved /= np.linalg.norm(moved)
        return reciprocal_rank_fusion([order(bm), order(vectors @ moved)])[:DEPTH]

    def scores_of(ranking: Ranking, n: int) -> np.ndarray:
        out = np.zeros(n)
        for c, v in ranking:
            out[c] = v
        return out

    def neighbours(q: str, i: DocumentIndex) -> Ranking:
        base = scores_of(reader.rank(q, i), i.n_chunks)
        smooth = base.copy()
        smooth[1:] += 0.25 * base[:-1]
        smooth[:-1] += 0.25 * base[1:]
        return top_k(smooth, DEPTH)

    def sections(q: str, i: DocumentIndex) -> Ranking:
        section = np.array([i.section[i.chunk_units[c][0]] for c in range(i.n_chunks)])
        bm, dense = s.bm25(q, i), s.dense(q, i)
        ids = np.unique(section)
        by_bm25 = [ids[k] for k in order(np.array([bm[section == x].max() for x in ids]))]
        by_dense = [ids[k] for k in order(np.array([dense[section == x].mean() for x in ids]))]
        sec = dict(reciprocal_rank_fusion([by_bm25, by_dense]))
        base = scores_of(reader.rank(q, i), i.n_chunks)
        return top_k(base + 0.5 * np.array([sec[x] for x in section]), DEPTH)

    def stripped(q: str, i: DocumentIndex) -> Ranking:
        return reader.rank(" ".join(META.sub(" ", q).split()) or q, i)

    def maxsim_idf(q: str, i: DocumentIndex) -> np.ndarray:
        return s.maxsim(q, i, idf=True)

    plain = {}
    more = {"passage_tokens": 512}
    return {
        "hybrid (shipped)": (reader.rank, plain),
        "bm25": (fused(s.bm25), plain),
        "dense": (fused(s.dense), plain),
        "rocchio": (rocchio, plain),
        "neighbours": (neighbours, plain),
        "sections": (sections, plain),
        "maxsim": (fused(s.maxsim), plain),
        "maxsim-idf": (fused(maxsim_idf), plain),
        "bm25+dense+maxsim-idf": (fused(s.bm25, s.dense, maxsim_idf), plain),
        "meta-stripped": (stripped, plain),
        "one-per-section": (reader.rank, {"per_section": 1}),
        "passages-512": (reader.rank, more),
        "top-8": (reader.rank, {"top_k": 8}),
    }


def one_per_section(reader: RetrievalReader, q: str, index: DocumentIndex, ranked: Ranking):
    """The reader's evidence step, taking at most one passage from each section."""
    rel = reader.relevance(q, index, ranked)
    passages: list[tuple[int, int]] = []
    used: set[int] = set()
    for u in sorted(rel, key=lambda u: (-rel[u], u)):
        if len(passages) >= reader.top_k:
            break
        if index.section[u] in used or any(a <= u <= b for a, b in passages):
            continue
        passages.append(reader._grow(index, u, rel))
        used.add(int(index.section[u]))
    doc = index.documents[0]
    return [
        types.SimpleNamespace(text=doc.text[index.units[a].start : index.units[b].end])
        for a, b in passages
    ]


def main() -> None:
    data = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/leval_qasper"
    out = sys.argv[2] if len(sys.argv) > 2 else None
    t0 = time.perf_counter()
    reader = build_reader(answer="sentence", strategy="hybrid")
    items = []
    for p, paper in enumerate(load_qasper(data)):
        index = reader.index([text_document(paper["input"], f"paper{p}")])
        text = _squash(paper["input"])
        for q, ref in zip(paper["instructions"], paper["outputs"], strict=True):
            if _squash(ref) in text:
                items.append((index, q, _squash(ref)))
    signals = Signals(reader)
    rows = []
    for name, (rank, options) in variants(signals).items():
        hits, first = [], []
        for index, q, ref in items:
            ranked = rank(q, index)
            reader.top_k = options.get("top_k", 3)
            reader.passage_tokens = options.get("passage_tokens", 256)
            if options.get("per_section"):
                evidence = one_per_section(reader, q, index, ranked)
            else:
                evidence = reader.evidence(q, index, ranked)
            hits.append(any(ref in _squash(e.text) for e in evidence))
            holds = (
                k for k, (c, _) in enumerate(ranked, 1) if ref in _squash(index.chunks[c].text)
            )
            first.append(next(holds, DEPTH + 1))
        first_rank = np.array(first)
        row = {
            "variant": name,
            "questions": len(items),
            "evidence_hit_rate": round(float(np.mean(hits)), 4),
            **{f"chunk_recall@{k}": round(float(np.mean(first_rank <= k)), 4) for k in RECALL_AT},
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"rows": rows, "seconds": round(time.perf_counter() - t0, 1)}
    if out:
        from longmm.io import atomic_write_json

        atomic_write_json(out, result)


if __name__ == "__main__":
    main()

"""``longmm bench qasper``: the retrieval reader on whole NLP papers (Qasper via L-Eval).

For each of the 23 papers in ``scientific_qa.jsonl`` the reader indexes the paper once and
answers its questions. Two figures: the evidence hit rate (for the questions whose reference
answer occurs word for word in the paper, the share where a top-``k`` evidence passage
contains it; case and spacing ignored) and the answer token-F1 (SQuAD normalisation) over all
questions.

longmm bench qasper --data ../shared/data/leval_qasper --strategy hybrid --json out.json
"""

from __future__ import annotations

import argparse
import json
import re
import string
import time
from collections import Counter
from pathlib import Path
from typing import Any

from longmm.errors import DataError
from longmm.io import atomic_write_json

DEFAULT_DATA = "../shared/data/leval_qasper"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("qasper", help="retrieval reader on Qasper papers (L-Eval): evidence, F1")
    p.add_argument("--data", default=DEFAULT_DATA, help="folder with scientific_qa.jsonl")
    p.add_argument("--strategy", default="hybrid", choices=("bm25", "dense", "hybrid"))
    p.add_argument("--top-k", type=int, default=3, help="evidence passages per question")
    p.add_argument("--chunk-tokens", type=int, default=64, help="chunk size in tokens")
    p.add_argument(
        "--passage-tokens", type=int, default=256, help="evidence passage size after expansion"
    )
    p.add_argument("--backend", default="auto", help="dense encoder: auto, torch, onnx, onnx-int8")
    p.add_argument(
        "--answer",
        default="span",
        choices=("span", "sentence"),
        help="answer extraction, as in longmm read (default span: the trained span head)",
    )
    p.add_argument("--json", default=None, help="write the figures and per-question rows here")
    p.add_argument(
        "--baseline-words",
        type=int,
        default=None,
        metavar="N",
        help="instead, the plain baseline: N-word chunks, BM25 + MiniLM fused, no expansion",
    )


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def token_f1(prediction: str, reference: str) -> float:
    pred = normalize_answer(prediction).split()
    ref = normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def _squash(text: str) -> str:
    return " ".join(text.split()).lower()


def load_qasper(folder: str | Path) -> list[dict[str, Any]]:
    path = Path(folder) / "scientific_qa.jsonl"
    if not path.is_file():
        raise DataError(str(path), "not found (pass --data, the folder of leval_qasper)")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if len(row["instructions"]) != len(row["outputs"]):
            raise DataError(f"{path}:{n}", "instructions and outputs differ in length")
        rows.append(row)
    return rows


def run_qasper(
    data: str | Path = DEFAULT_DATA,
    strategy: str = "hybrid",
    top_k: int = 3,
    chunk_tokens: int = 64,
    passage_tokens: int = 256,
    backend: str = "auto",
    extraction: str = "span",
) -> dict[str, Any]:
    from longmm.reading.enhance import Chunker
    from longmm.reading.ingest import text_document
    from longmm.reading.reader import build_reader

    papers = load_qasper(data)
    reader = build_reader(
        answer=extraction,
        strategy=strategy,  # type: ignore[arg-type]
        top_k=top_k,
        chunker=Chunker(max_tokens=chunk_tokens, overlap_tokens=chunk_tokens // 4),
        passage_tokens=passage_tokens,
        backend=backend,  # type: ignore[arg-type]
    )
    rows = []
    t0 = time.perf_counter()
    index_seconds = 0.0
    for p, paper in enumerate(papers):
        doc = text_document(paper["input"], f"paper{p}")
        index = reader.index([doc])
        index_seconds += index.seconds
        paper_text = _squash(paper["input"])
        for question, reference in zip(paper["instructions"], paper["outputs"], strict=True):
            answer = reader.answer(question, index)
            verbatim = _squash(reference) in paper_text
            hit = any(_squash(reference) in _squash(e.text) for e in answer.evidence)
            rows.append(
                {
                    "paper": p,
                    "question": question,
                    "reference": reference,
                    "answer": answer.answer,
                    "verbatim": verbatim,
                    "hit": hit if verbatim else None,
                    "f1": token_f1(answer.answer, reference),
                    "evidence_words": sum(len(e.text.split()) for e in answer.evidence),
                    "seconds": answer.seconds,
                }
            )
    seconds = time.perf_counter() - t0
    verbatim_rows = [r for r in rows if r["verbatim"]]
    summary = {
        "strategy": strategy,
        "top_k": top_k,
        "chunk_tokens": chunk_tokens,
        "passage_tokens": passage_tokens,
        "answer": extraction,
        # the multimodal reader (span answers) wraps the retrieval reader
        "backend": getattr(reader, "reader", reader).encoder.backend
        if strategy != "bm25"
        else None,
        "papers": len(papers),
        "questions": len(rows),
        "verbatim_questions": len(verbatim_rows),
        "evidence_hit_rate": sum(r["hit"] for r in verbatim_rows) / max(1, len(verbatim_rows)),
        "answer_f1": sum(r["f1"] for r in rows) / max(1, len(rows)),
        "mean_evidence_words": sum(r["evidence_words"] for r in rows) / max(1, len(rows)),
        "index_seconds": index_seconds,
        "seconds": seconds,
    }
    return {"summary": summary, "rows": rows}


def run_plain_baseline(
    data: str | Path = DEFAULT_DATA, words: int = 150, top_k: int = 3, backend: str = "auto"
) -> dict[str, Any]:
    """The issue's reference point: the paper cut into plain ``words``-word chunks (no
    sentences, sections or expansion), ranked by reciprocal rank fusion of BM25 and MiniLM;
    the top ``top_k`` chunks are the evidence."""
    from longmm.reading.retrieve import BM25Retriever, DenseEncoder, reciprocal_rank_fusion
    from longmm.reading.retrieve import top_k as best

    encoder = DenseEncoder(backend=backend)  # type: ignore[arg-type]
    hits = []
    for paper in load_qasper(data):
        tokens = paper["input"].split()
        chunks = [" ".join(tokens[i : i + words]) for i in range(0, len(tokens), words)]
        bm25 = BM25Retriever(chunks)
        vectors = encoder.encode(chunks)
        paper_text = _squash(paper["input"])
        for question, reference in zip(paper["instructions"], paper["outputs"], strict=True):
            if _squash(reference) not in paper_text:
                continue
            lexical = [i for i, _ in best(bm25.scores(question), len(chunks))]
            dense = [i for i, _ in best(vectors @ encoder.encode([question])[0], len(chunks))]
            top = [i for i, _ in reciprocal_rank_fusion([lexical, dense])[:top_k]]
            hits.append(any(_squash(reference) in _squash(chunks[i]) for i in top))
    return {
        "baseline": f"plain {words}-word chunks, BM25 + MiniLM reciprocal rank fusion",
        "top_k": top_k,
        "verbatim_questions": len(hits),
        "evidence_hit_rate": sum(hits) / max(1, len(hits)),
        "mean_evidence_words": top_k * words,
    }


def run_qasper_bench(opts: argparse.Namespace) -> None:
    if opts.baseline_words:
        base = run_plain_baseline(opts.data, opts.baseline_words, opts.top_k, opts.backend)
        print(
            f"Qasper baseline ({base['baseline']}), top {base['top_k']}: evidence hit rate "
            f"on the {base['verbatim_questions']} verbatim answers: "
            f"{100 * base['evidence_hit_rate']:.1f}%"
        )
        if opts.json:
            atomic_write_json(opts.json, base)
            print(f"wrote {opts.json}")
        return
    result = run_qasper(
        opts.data,
        opts.strategy,
        opts.top_k,
        opts.chunk_tokens,
        opts.passage_tokens,
        opts.backend,
        opts.answer,
    )
    s = result["summary"]
    print(
        f"Qasper (L-Eval), {s['papers']} papers, {s['questions']} questions, strategy "
        f"{s['strategy']}, top {s['top_k']}, {s['answer']} answers:\n"
        f"  evidence hit rate on the {s['verbatim_questions']} verbatim answers: "
        f"{100 * s['evidence_hit_rate']:.1f}%\n"
        f"  answer token-F1 over all questions: {100 * s['answer_f1']:.1f}\n"
        f"  evidence words per question: {s['mean_evidence_words']:.0f}\n"
        f"  {s['seconds']:.1f} s in all ({s['index_seconds']:.1f} s indexing)"
    )
    if opts.json:
        atomic_write_json(opts.json, result)
        print(f"wrote {opts.json}")

"""Questions about whole long papers, answered by the reader as ``longmm read`` builds it:
Qasper (L-Eval, 23 NLP papers, 184 questions) and COVID-QA (98 papers, 1,360 questions,
held out from every training of ours).

Per question: the evidence passages (top ``k``) and the answer. Reported:
- evidence hit rate: a top-``k`` passage contains a reference answer (whitespace and case
  folded), over the questions whose reference occurs verbatim in the paper and is not a bare
  yes/no (which would match inside other words);
- answer exact match and token F1 (SQuAD's normalisation, best over the references), over
  all questions;
- evidence characters per question, seconds per question (p50, p90; indexing apart).
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longmm.errors import DataError
from longmm.evaluation.answers import best_over, exact_match, token_f1
from longmm.io import atomic_write_json

DATASETS = {
    "qasper": "../shared/data/leval_qasper",
    "covidqa": "../shared/data/qa_train/covidqa.json.gz",
}
YES_NO = frozenset({"yes", "no"})


@dataclass
class Paper:
    title: str
    text: str
    questions: list[tuple[str, list[str]]]  # (question, reference answers)


def squash(text: str) -> str:
    return " ".join(text.split()).lower()


def load_papers(dataset: str, path: str | Path | None = None) -> list[Paper]:
    path = Path(path or DATASETS[dataset])
    if dataset == "qasper":
        file = path / "scientific_qa.jsonl" if path.is_dir() else path
        if not file.is_file():
            raise DataError(str(file), "not found (pass --data, the folder of leval_qasper)")
        papers = []
        for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if len(row["instructions"]) != len(row["outputs"]):
                raise DataError(f"{file}:{n}", "instructions and outputs differ in length")
            qs = [(q, [a]) for q, a in zip(row["instructions"], row["outputs"], strict=True)]
            papers.append(Paper(f"paper{len(papers)}", row["input"], qs))
        return papers
    if dataset == "covidqa":
        if not path.is_file():
            raise DataError(str(path), "not found (pass --data, covidqa.json.gz of qa_train)")
        with gzip.open(path, "rt", encoding="utf-8") as f:
            data = json.load(f)["data"]
        return [
            Paper(
                str(article.get("title", i)),
                para["context"],
                [(qa["question"], [a["text"] for a in qa["answers"]]) for qa in para["qas"]],
            )
            for i, article in enumerate(data)
            for para in article["paragraphs"]
        ]
    raise DataError("dataset", f"unknown dataset {dataset!r} (known: {sorted(DATASETS)})")


def countable(references: Sequence[str], paper_text: str) -> bool:
    """Whether the evidence hit rate counts this question: a reference answer occurs
    verbatim in the paper and is not a bare yes/no."""
    return any(r.strip().lower() not in YES_NO and squash(r) in paper_text for r in references)


def run_papers(
    papers: Sequence[Paper], reader: Any, limit_questions: int | None = None
) -> dict[str, Any]:
    """Every question of every paper (one index per paper); rows and a summary."""
    from longmm.reading.ingest import text_document

    rows = []
    index_seconds = 0.0
    for paper in papers:
        index = reader.index([text_document(paper.text, paper.title)])
        index_seconds += index.seconds
        text = squash(paper.text)
        for question, refs in paper.questions:
            if limit_questions is not None and len(rows) >= limit_questions:
                break
            t0 = time.perf_counter()
            answer = reader.answer(question, index)
            seconds = time.perf_counter() - t0
            counted = countable(refs, text)
            evidence = [squash(e.text) for e in answer.evidence]
            hit = any(
                squash(r) in e for r in refs if r.strip().lower() not in YES_NO for e in evidence
            )
            rows.append(
                {
                    "paper": paper.title,
                    "question": question,
                    "references": refs,
                    "answer": answer.answer,
                    "counted": counted,
                    "hit": hit if counted else None,
                    "f1": best_over(token_f1, answer.answer, refs),
                    "exact_match": best_over(exact_match, answer.answer, refs),
                    "evidence_chars": sum(len(e.text) for e in answer.evidence),
                    "seconds": seconds,
                }
            )
    return {"rows": rows, "summary": summarize(rows, len(papers), index_seconds)}


def summarize(rows: list[dict[str, Any]], papers: int, index_seconds: float) -> dict[str, Any]:
    counted = [r for r in rows if r["counted"]]
    n = max(len(rows), 1)
    secs = sorted(r["seconds"] for r in rows) or [0.0]
    return {
        "papers": papers,
        "questions": len(rows),
        "counted_questions": len(counted),
        "evidence_hit_rate": round(sum(r["hit"] for r in counted) / max(len(counted), 1), 4),
        "answer_f1": round(100 * sum(r["f1"] for r in rows) / n, 2),
        "answer_exact_match": round(100 * sum(r["exact_match"] for r in rows) / n, 2),
        "mean_evidence_chars": round(sum(r["evidence_chars"] for r in rows) / n, 1),
        "seconds_p50": round(statistics.median(secs), 4),
        "seconds_p90": round(secs[min(len(secs) - 1, int(0.9 * len(secs)))], 4),
        "index_seconds": round(index_seconds, 2),
    }


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    what = {
        "qasper": "Qasper papers (L-Eval, 184 questions)",
        "covidqa": "COVID-QA papers (98, 1,360 questions; held out)",
    }[name]
    p = sub.add_parser(name, help=f"the reader on {what}: evidence hit rate, answer EM/F1")
    p.add_argument("--data", default=DATASETS[name], help="the data set's file or folder")
    p.add_argument("--strategy", default="hybrid", choices=("bm25", "dense", "hybrid"))
    p.add_argument("--top-k", type=int, default=3, help="evidence passages per question")
    p.add_argument("--passage-tokens", type=int, default=256, help="evidence passage size")
    p.add_argument("--backend", default="auto", help="auto, torch, onnx or onnx-int8")
    p.add_argument(
        "--answer", default="qa", choices=("span", "qa", "sentence"), help="as in longmm read"
    )
    p.add_argument("--no-rerank", action="store_true", help="skip the cross-encoder re-ranker")
    p.add_argument("--reranker", default=None, help="another re-ranker (as in longmm read)")
    p.add_argument("--answer-model", default=None, help="another answer model")
    p.add_argument("--papers", type=int, default=None, help="only the first N papers")
    p.add_argument("--json", default=None, help="write the summary and per-question rows here")
    if name == "qasper":
        p.add_argument(
            "--baseline-words",
            type=int,
            default=None,
            metavar="N",
            help="instead, the plain baseline: N-word chunks, BM25 + MiniLM fused, no expansion",
        )


def run_bench(opts: argparse.Namespace) -> dict[str, Any] | None:
    if getattr(opts, "baseline_words", None):
        from longmm.bench.qasper import run_baseline_bench

        run_baseline_bench(opts)
        return None
    from longmm.cli.read import reader_from_options

    papers = load_papers(opts.bench, opts.data)[: opts.papers]
    reader = reader_from_options(opts)
    t0 = time.perf_counter()
    result = run_papers(papers, reader)
    s = result["summary"]
    s.update(
        {
            "dataset": opts.bench,
            "strategy": opts.strategy,
            "top_k": opts.top_k,
            "answer": opts.answer,
            "rerank": not opts.no_rerank,
            "seconds": round(time.perf_counter() - t0, 1),
        }
    )
    print(
        f"{opts.bench}: {s['papers']} papers, {s['questions']} questions; strategy "
        f"{s['strategy']}, re-ranker {'on' if s['rerank'] else 'off'}, {s['answer']} answers\n"
        f"  evidence hit rate (top {s['top_k']}) on the {s['counted_questions']} verbatim, "
        f"non-yes/no answers: {100 * s['evidence_hit_rate']:.1f}%\n"
        f"  answer F1 {s['answer_f1']:.1f}, exact match {s['answer_exact_match']:.1f} "
        f"(all questions)\n"
        f"  evidence characters per question: {s['mean_evidence_chars']:.0f}\n"
        f"  seconds per question p50 {s['seconds_p50']:.3f}, p90 {s['seconds_p90']:.3f}; "
        f"{s['seconds']:.0f} s in all ({s['index_seconds']:.0f} s indexing)"
    )
    if opts.json:
        atomic_write_json(opts.json, result)
        print(f"wrote {opts.json}")
    return result

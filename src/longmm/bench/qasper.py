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
from pathlib import Path
from typing import Any

from longmm.errors import DataError
from longmm.io import atomic_write_json

DEFAULT_DATA = "../shared/data/leval_qasper"


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


def run_baseline_bench(opts: argparse.Namespace) -> None:
    base = run_plain_baseline(opts.data, opts.baseline_words, opts.top_k, opts.backend)
    print(
        f"Qasper baseline ({base['baseline']}), top {base['top_k']}: evidence hit rate "
        f"on the {base['verbatim_questions']} verbatim answers: "
        f"{100 * base['evidence_hit_rate']:.1f}%"
    )
    if opts.json:
        atomic_write_json(opts.json, base)
        print(f"wrote {opts.json}")

"""Speed of `longmm read`'s default reader on 2 cores, and the int8 re-ranker against torch.

1. Latency: a ~30K-token document made of whole COVID-QA papers (held out from training),
   indexed once; every question of those papers asked of it. Reports the indexing time and
   seconds per question (p50, p90) for the default reader (re-ranker + answer model, int8 ONNX)
   and, in the same run, the reader without the re-ranker answering with the best sentence.
2. Parity: on every Qasper question, the re-ranker's candidates (the first ranking's best
   chunks) scored by the int8 ONNX re-ranker and by the torch one: how often both pick the
   same top chunk.

Run from the repository root: python benchmarks/read_speed.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import numpy as np

from longmm.bench.longqa import load_papers
from longmm.reading.ingest import text_document
from longmm.reading.pipeline import build_reader

TARGET_TOKENS = 30_000


def text_reader(reader: Any) -> Any:
    """The retrieval reader inside (the multimodal reader wraps one)."""
    return getattr(reader, "reader", reader)


def latency(reader: Any, label: str) -> dict[str, Any]:
    papers = load_papers("covidqa")
    counter = text_reader(reader).chunker.counter
    parts, questions, tokens = [], [], 0
    for paper in papers:
        parts.append(paper.text)
        questions += [q for q, _ in paper.questions]
        tokens += len(counter.token_starts([paper.text])[0])
        if tokens >= TARGET_TOKENS:
            break
    doc = text_document("\n\n".join(parts), "covidqa-30k")
    t0 = time.perf_counter()
    index = reader.index([doc])
    index_s = time.perf_counter() - t0
    reader.answer(questions[0], index)  # warm: ONNX sessions built, caches made
    secs = []
    for q in questions:
        t = time.perf_counter()
        reader.answer(q, index)
        secs.append(time.perf_counter() - t)
    secs.sort()
    out = {
        "reader": label,
        "tokens": tokens,
        "papers": len(parts),
        "questions": len(questions),
        "index_s": round(index_s, 2),
        "p50_s": round(statistics.median(secs), 3),
        "p90_s": round(secs[int(0.9 * (len(secs) - 1))], 3),
    }
    print(json.dumps(out))
    return out


def parity(candidates: int = 40) -> dict[str, Any]:
    int8 = text_reader(build_reader(answer="sentence", backend="onnx-int8"))
    fp32 = build_reader(answer="sentence", backend="torch", rerank=True).reranker
    same, n, gaps = 0, 0, []
    for paper in load_papers("qasper"):
        index = int8.index([text_document(paper.text, paper.title)])
        for question, _ in paper.questions:
            head = int8.first_rank(question, index)[:candidates]
            texts = [index.chunk_texts[c] for c, _ in head]
            a = int8.reranker.score(question, texts)
            b = fp32.score(question, texts)
            same += int(np.argmax(a) == np.argmax(b))
            gaps.append(float(np.max(np.abs(a - b))))
            n += 1
    out = {
        "questions": n,
        "same_top_chunk": round(same / max(n, 1), 4),
        "max_score_difference_p50": round(statistics.median(gaps), 4),
    }
    print(json.dumps(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default=None, help="write the figures here")
    parser.add_argument("--skip-parity", action="store_true")
    opts = parser.parse_args()
    result = {
        "latency": [
            latency(build_reader(), "default (re-ranker + span head)"),
            latency(build_reader(answer="sentence", rerank=False), "no re-ranker, best sentence"),
        ]
    }
    if not opts.skip_parity:
        result["parity"] = parity()
    if opts.json:
        with open(opts.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()

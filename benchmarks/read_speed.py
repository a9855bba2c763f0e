"""Speed of `longmm read`'s default reader on 2 cores, and the int8 re-ranker against torch.

1. Latency: a ~30K-token document made of whole COVID-QA papers (held out from training),
   indexed once; every question of those papers asked of it. Reports the indexing time and
   seconds per question (p50, p90) for the default reader (re-ranker + answer model, int8 ONNX)
   and, in the same run, the reader without the re-ranker answering with the best sentence.
2. Parity: on every Qasper question, the re-ranker's candidates (the first ranking's best
   chunks) scored by the re-ranker the reader runs (float32 ONNX), by its int8 form and by
   the torch model: how often each picks the torch model's top chunk.

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
    """How often the re-ranker the reader runs (``auto``: float32 ONNX) and its int8 form pick
    the same top chunk as the torch model."""
    from longmm.reading.retrieve.rerank import CrossEncoder

    reader = text_reader(build_reader(answer="sentence"))
    forms = {"default": reader.reranker, "onnx-int8": CrossEncoder(None, backend="onnx-int8")}
    fp32 = CrossEncoder(None, backend="torch")
    same = {name: 0 for name in forms}
    gaps: dict[str, list[float]] = {name: [] for name in forms}
    n = 0
    for paper in load_papers("qasper"):
        index = reader.index([text_document(paper.text, paper.title)])
        for question, _ in paper.questions:
            head = reader.first_rank(question, index)[:candidates]
            texts = [index.chunk_texts[c] for c, _ in head]
            b = fp32.score(question, texts)
            for name, model in forms.items():
                a = model.score(question, texts)
                same[name] += int(np.argmax(a) == np.argmax(b))
                gaps[name].append(float(np.max(np.abs(a - b))))
            n += 1
    out = {
        "questions": n,
        "default_backend": reader.reranker.backend,
        **{f"{name}_same_top_chunk": round(same[name] / max(n, 1), 4) for name in forms},
        **{
            f"{name}_max_score_difference_p50": round(statistics.median(gaps[name]), 4)
            for name in forms
        },
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
            latency(build_reader(), "default (re-ranker + answer model)"),
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

"""The re-ranker's test split scored by the two rankers a user has without our cross-encoder:
BM25 over the candidates and the packaged bi-encoder MiniLM (cosine of the question's and the
passage's embeddings), with the same metrics as the recipe's metrics.json (MRR@10, recall@1/3;
held-out SQuAD articles and COVID-QA, 600 questions each, every hard negative).

Run from the repository root: python benchmarks/rerank_vs_biencoder.py [--split test]
"""

from __future__ import annotations

import argparse
import json
import random

import numpy as np

from longmm.data.qa import passage_window
from longmm.data.qa_modules import RerankData
from longmm.reading.pipeline import build_reader
from longmm.tasks.rerank import ranking_metrics


def windows(dm: RerankData, split: str) -> list[tuple[str, str, list[str]]]:
    """(source, question, candidate texts, the positive first) exactly as the data module
    makes them (same seed, same draws)."""
    order = list(dm.queries)
    rng = random.Random(f"{dm.seed}:{order.index(split)}")
    out = []
    for q in dm.queries[split]:
        answer = next((a for a in q.answers if a in dm.passages[q.positive]), None)
        texts = [passage_window(dm.passages[q.positive], dm.window_words, rng, answer)]
        texts += [passage_window(dm.passages[p], dm.window_words, rng) for p in q.negatives]
        out.append((q.source, q.question, texts))
    return out


def rank_of_positive(scores: np.ndarray) -> int:
    return 1 + int((scores[1:] >= scores[0]).sum())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--split", default="test", choices=("val", "test"))
    parser.add_argument("--reranker", default=None, help="a run folder or adapter file")
    opts = parser.parse_args()
    from longmm.reading.retrieve import BM25Retriever, DenseEncoder

    dm = RerankData()
    groups = windows(dm, opts.split)
    encoder = DenseEncoder()
    cross = build_reader(answer="sentence", reranker=opts.reranker).reranker
    ranks: dict[str, dict[str, list[int]]] = {"bm25": {}, "bi-encoder": {}, "cross-encoder": {}}
    for source, question, texts in groups:
        vecs = encoder.encode([question, *texts])
        scores = {
            "bm25": BM25Retriever(texts).scores(question),
            "bi-encoder": vecs[1:] @ vecs[0],
            "cross-encoder": cross.score(question, texts),
        }
        for name, s in scores.items():
            ranks[name].setdefault(source, []).append(rank_of_positive(np.asarray(s)))
    result = {
        name: {
            "all": ranking_metrics([r for rs in by.values() for r in rs]),
            **{s: ranking_metrics(rs) for s, rs in sorted(by.items())},
        }
        for name, by in ranks.items()
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

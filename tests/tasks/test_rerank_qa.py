"""The re-ranker and answer-model recipes' tasks on tiny models: a short fit writes the run
folder with its metrics and an adapter file that the reader's runners load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from longmm.reading.answer import Evidence
from longmm.reading.answer.qa_model import best_in_window, best_threshold, decode

REPO = Path(__file__).resolve().parents[2]


def _fit(cli_args: list[str]) -> None:
    from longmm.cli import main

    main(cli_args)


def test_reranker_recipe_fits_and_its_adapter_scores(tmp_path, tiny_qa_train, tiny_bert) -> None:
    from longmm.reading.retrieve.rerank import CrossEncoder

    base = str(tiny_bert("base"))
    out = tmp_path / "rr"
    _fit(
        [
            "fit", "--config", str(REPO / "recipes/reranker.yaml"), "--out", str(out),
            "--data.root", str(tiny_qa_train), "--data.tokenizer", base,
            "--model.model", base, "--model.layers", "1", "--model.rank", "4",
            "--data.train_limit", "16", "--data.val_limit", "8", "--data.test_limit", "8",
            "--trainer.max_epochs", "1", "--trainer.val_check_interval", "1.0",
            "--trainer.enable_progress_bar", "false",
        ]
    )  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]) >= {"mrr10", "recall1", "recall3", "by_source"}
    assert 0 < metrics["test"]["mrr10"] <= 1
    adapter = out / "reranker.safetensors"
    assert adapter.is_file() and adapter.stat().st_size < 2_000_000
    ce = CrossEncoder(out, backend="torch")
    scores = ce.score("How much does it cost?", ["It costs 100 dollars.", "Nothing here."])
    assert scores.shape == (2,) and np.isfinite(scores).all()


def test_answer_recipe_fits_and_its_adapter_answers(tmp_path, tiny_qa_train, tiny_bert) -> None:
    from longmm.reading.answer.qa_model import AnswerModel

    base = str(tiny_bert("base"))
    out = tmp_path / "qa"
    _fit(
        [
            "fit", "--config", str(REPO / "recipes/answer_qa.yaml"), "--out", str(out),
            "--data.root", str(tiny_qa_train), "--data.tokenizer", base,
            "--model.model", base, "--model.layers", "1", "--model.rank", "4",
            "--data.train_limit", "16", "--data.val_limit", "8", "--data.test_limit", "8",
            "--data.max_length", "64", "--data.stride", "16",
            "--trainer.max_epochs", "1", "--trainer.val_check_interval", "1.0",
            "--trainer.enable_progress_bar", "false",
        ]
    )  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"f1", "exact_match", "no_answer_accuracy", "null_threshold"} <= set(metrics["test"])
    model = AnswerModel(out / "answer_qa.safetensors", backend="torch")
    assert model.max_length == 64
    assert model.threshold == pytest.approx(metrics["val"]["null_threshold"], abs=1e-4)
    text = "The red item costs 100 dollars. It was built in 1900."
    span = model.read("How much does the red item cost?", [Evidence(text, "d", 10, 10 + len(text))])
    assert span is not None and text[span.start - 10 : span.end - 10] == span.text


def test_decode_picks_the_best_span_and_the_no_answer_margin() -> None:
    start = np.array([1.0, -5, 0.5, 3.0, -1.0, 0.0])
    end = np.array([1.0, -5, -1.0, 0.0, 2.5, 0.0])
    assert best_in_window(start, end, 2, 4, 30) == (5.5, 3, 4)
    assert best_in_window(start, end, 2, 4, 1)[1:] == (3, 3)  # at most one token long
    offsets = [(0, 0), (0, 0), (0, 3), (4, 7), (8, 12), (0, 0)]
    span = decode([start], [end], [offsets], [2], 30)
    assert (span.start, span.end, span.margin) == (4, 12, 5.5 - 2.0)


def test_best_threshold_maximises_f1() -> None:
    margins = [5.0, 3.0, 1.0, -1.0]
    answerable = [True, True, False, False]
    f1 = [1.0, 0.5, 0.0, 0.0]
    threshold, score = best_threshold(margins, answerable, f1)
    assert 1.0 < threshold < 3.0 and score == (1.0 + 0.5 + 1 + 1) / 4


def test_adapted_task_trains_in_train_mode_with_dropout_as_asked(tiny_bert) -> None:
    import torch

    from longmm.tasks.rerank import Rerank

    folder = str(tiny_bert("base"))
    plain = Rerank(model=folder, rank=4, alpha=8, layers=1)
    assert plain.training and plain.net.training  # not the eval mode the model loads in
    assert all(m.p == 0 for m in plain.net.modules() if isinstance(m, torch.nn.Dropout))
    noisy = Rerank(model=folder, rank=4, alpha=8, layers=1, dropout=True)
    live = [m for m in noisy.net.modules() if isinstance(m, torch.nn.Dropout) and m.training]
    assert live and all(m.p > 0 for m in live)

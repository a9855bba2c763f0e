"""``longmm bench recipes``: which runs it makes and how, the table, the docs block."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from longmm.bench.recipes import (
    FULL,
    QUICK,
    command_for,
    markdown_table,
    run_recipes_bench,
    update_docs,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("programs", [FULL, QUICK], ids=["full", "quick"])
def test_programs_name_real_recipes_and_judges_that_run_first(programs: tuple) -> None:
    names = [p.name for p in programs]
    for p in programs:
        assert (ROOT / "recipes" / f"{p.recipe}.yaml").is_file(), p.recipe
        if p.judge:
            assert names.index(p.judge) < names.index(p.name), p.name
            judge = programs[names.index(p.judge)]
            # The judge is trained plainly: label smoothing would cap its confidence.
            assert judge.overrides[:2] == ("--model.init_args.label_smoothing", "0")
    if programs is QUICK:
        assert all(p.data is None for p in programs)  # embedded data only


def test_command_passes_data_judge_and_overrides(tmp_path: Path) -> None:
    gan = next(p for p in FULL if p.name == "cgan_mnist")
    cmd = command_for(gan, tmp_path / "runs", tmp_path / "shared")
    assert cmd[:3] == ["fit", "--config", "recipes/cgan_mnist.yaml"]
    assert cmd[cmd.index("--data.root") + 1] == str(tmp_path / "shared" / "mnist")
    assert cmd[cmd.index("--model.init_args.judge") + 1] == str(tmp_path / "runs" / "judge_mnist")


def test_table_and_docs_block_are_replaced_in_place(tmp_path: Path) -> None:
    rows = [
        {
            "program": "GAN",
            "command": "longmm fit --config recipes/gan_mnist.yaml",
            "status": "ok",
            "train_seconds": 12.5,
            "test": {"fid": 1.23456, "count": 2000},
        },
        {"program": "Translator", "command": "longmm fit --config x", "status": "skipped: no"},
    ]
    table = markdown_table(rows, "Side by side")
    assert "| GAN | fid 1.2346, count 2000 | 12.5 | ok |" in table
    assert "| Translator | — | — | skipped: no |" in table
    docs = tmp_path / "results.md"
    docs.write_text("# Results\n\nmine\n")
    update_docs(docs, "first", "bench:recipes")
    update_docs(docs, "second", "bench:recipes")
    text = docs.read_text()
    assert text.count("<!-- bench:recipes -->") == 1 and "second" in text and "first" not in text
    assert text.startswith("# Results\n\nmine\n")


def test_missing_shared_data_skips_the_row(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    opts = argparse.Namespace(
        quick=False,
        only="transformer_multi30k",
        runs=str(tmp_path / "runs"),
        shared=str(tmp_path / "nothing"),
        json=str(tmp_path / "recipes.json"),
        docs=str(tmp_path / "results.md"),
    )
    run_recipes_bench(opts)
    (row,) = json.loads((tmp_path / "recipes.json").read_text())["rows"]
    assert row["status"].startswith("skipped:") and "multi30k" in row["status"]
    assert "<!-- bench:recipes -->" in (tmp_path / "results.md").read_text()


def test_reuse_reads_back_only_runs_finished_by_the_same_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess

    from longmm.bench.recipes import STAMP, run_program

    monkeypatch.chdir(ROOT)
    cnn = next(p for p in QUICK if p.name == "cnn_digits")
    runs = tmp_path / "runs"
    first = run_program(cnn, runs, tmp_path, reuse=True)  # nothing to reuse: it trains
    assert first["status"] == "ok" and 0 <= first["test"]["accuracy"] <= 1
    stamp = json.loads((runs / "cnn_digits" / STAMP).read_text())
    assert stamp["args"] == command_for(cnn, runs, tmp_path)

    def no_training(*args, **kwargs):
        raise AssertionError("the finished run should have been read back")

    monkeypatch.setattr(subprocess, "run", no_training)
    again = run_program(cnn, runs, tmp_path, reuse=True)
    assert again["status"].startswith("ok (reused: finished ")
    assert again["test"] == first["test"]
    # A run finished by another command is not taken for this one.
    stamp["args"] = [*stamp["args"], "--trainer.max_epochs", "9"]
    (runs / "cnn_digits" / STAMP).write_text(json.dumps(stamp))
    with pytest.raises(AssertionError, match="read back"):
        run_program(cnn, runs, tmp_path, reuse=True)

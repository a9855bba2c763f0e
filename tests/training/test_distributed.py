"""Distributed training and batch inference: 2-process DDP on CPU (gloo) through the real
``longmm`` command, and the shard merge that puts the ranks' predictions in input order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from longmm.training.distributed import merge_shards

DDP = [
    "--trainer.strategy",
    "ddp",
    "--trainer.devices",
    "2",
    "--trainer.accelerator",
    "cpu",
]


def test_merge_shards_in_input_order_once_each(tmp_path: Path) -> None:
    # Rank 0 holds the even indices, rank 1 the odd; the sampler padded rank 1 with index 0.
    ranks = {0: [0, 2, 4], 1: [0, 1, 3]}
    shards = []
    for rank, indices in ranks.items():
        path = tmp_path / f"rank{rank}.jsonl"
        path.write_text("".join(json.dumps({"index": i, "rank": rank}) + "\n" for i in indices))
        shards.append(path)
    out = tmp_path / "predictions.jsonl"
    assert merge_shards(shards, out) == 5
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2, 3, 4]


def longmm(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "longmm.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_ddp_fit_on_two_cpu_processes_then_sharded_predict(
    tiny_recipe: Path, tmp_path: Path
) -> None:
    from longmm.cli import run_lightning

    run = tmp_path / "run"
    quick = [
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "4",
        "--trainer.limit_val_batches",
        "1",
    ]
    proc = longmm("fit", "--config", str(tiny_recipe), "--out", str(run), *quick, *DDP)
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stdout + proc.stderr
    # One run folder, written once by rank 0: one config, one log version, one set of metrics.
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoints",
        "config.yaml",
        "data.json",
        "logs",
        "metrics.json",
        "plots",
        "report.md",
    ]
    assert [p.name for p in (run / "logs").iterdir()] == ["version_0"]
    metrics = json.loads((run / "metrics.json").read_text())
    test_size = json.loads((run / "data.json").read_text())["splits"]["test"]["count"]
    # The final test saw every test sample exactly once (no sampler padding).
    assert sum(map(sum, metrics["test"]["confusion_matrix"])) == test_size
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0

    ckpt = str(run / "checkpoints" / "best.ckpt")
    config = str(run / "config.yaml")
    longmm("predict", "--config", config, "--ckpt_path", ckpt, "--out", str(tmp_path / "ddp"), *DDP)
    sharded = (tmp_path / "ddp" / "predictions.jsonl").read_text().splitlines()
    assert not (tmp_path / "ddp" / "predictions.parts").exists()
    # The run's config.yaml holds the DDP trainer settings: the reference is one process.
    one = ["--trainer.strategy", "auto", "--trainer.devices", "1", "--out", str(tmp_path / "one")]
    run_lightning(["predict", "--config", config, "--ckpt_path", ckpt, *one])
    single = (tmp_path / "one" / "predictions.jsonl").read_text().splitlines()
    assert len(sharded) == test_size
    assert [json.loads(r)["index"] for r in sharded] == list(range(test_size))
    assert sharded == single


def test_distributed_predict_needs_an_index(tmp_path: Path) -> None:
    from longmm.errors import LongmmError
    from longmm.training.distributed import gather_predictions

    with pytest.raises(LongmmError, match="index"):
        gather_predictions([{"pred": 1}], tmp_path / "p.jsonl", trainer=None)

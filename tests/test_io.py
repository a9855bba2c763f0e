"""Atomic writes: the old file survives a failed write; no temporary file is left."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from longmm.errors import CheckpointError
from longmm.io import atomic_path, atomic_write_json, atomic_write_text
from longmm.runs import (
    AtomicCheckpointIO,
    load_weights,
    read_best_checkpoint,
    read_checkpoint,
    save_weights,
)


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"accuracy": 0.9})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text('{"accuracy": 0.')  # half-written, then a crash
        raise RuntimeError("killed")
    assert target.read_text().strip().startswith('{\n  "accuracy": 0.9')
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_atomic_text_replaces(tmp_path: Path) -> None:
    target = tmp_path / "a" / "report.md"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"


def test_checkpoint_io_round_trip_and_errors(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "x.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}, "epoch": 1}, path)
    assert io.load_checkpoint(path)["epoch"] == 1
    assert not list(tmp_path.glob("*.tmp"))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match=r"x\.ckpt: truncated or corrupt"):
        read_checkpoint(path)
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        read_checkpoint(empty)
    torch.save({"no": "state"}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="no 'state_dict'"):
        read_checkpoint(tmp_path / "other.ckpt")


def test_best_checkpoint_of_a_run_folder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(CheckpointError, match="run folder not found"):
        read_best_checkpoint(run, "GAN")
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="best.ckpt: checkpoint not found"):
        read_best_checkpoint(run, "GAN")
    ckpt = {"state_dict": {}, "hyper_parameters": {"_class_path": "longmm.tasks.GAN"}}
    torch.save(ckpt, run / "checkpoints" / "best.ckpt")
    path, read = read_best_checkpoint(run, "GAN")
    assert path == run / "checkpoints" / "best.ckpt" and read["hyper_parameters"]["_class_path"]
    with pytest.raises(CheckpointError, match="a GAN run, where a Classify run is needed"):
        read_best_checkpoint(run, "Classify")


def test_safetensors_weights(tmp_path: Path) -> None:
    weights = {"a": torch.randn(3, 4), "b": torch.arange(5)}
    save_weights(weights, tmp_path / "w.safetensors")
    loaded = load_weights(tmp_path / "w.safetensors")
    assert torch.equal(loaded["a"], weights["a"]) and torch.equal(loaded["b"], weights["b"])
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00garbage")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_weights(tmp_path / "bad.safetensors")


def test_atomic_write_gives_the_usual_file_mode(tmp_path: Path) -> None:
    from longmm.io import _UMASK

    target = tmp_path / "out.json"
    atomic_write_json(target, {"a": 1})
    assert target.stat().st_mode & 0o777 == 0o666 & ~_UMASK

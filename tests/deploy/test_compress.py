"""Compression: pruning with fine-tuning, distillation, and a run folder that exports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from longmm.deploy.compress import apply_pruning, compress_run, make_permanent
from longmm.deploy.loading import load_run
from longmm.errors import LongmmError
from longmm.runs import read_checkpoint


def test_prune_and_distil_writes_a_run_folder_that_exports(image_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "compressed"
    report = compress_run(
        image_run,
        out,
        prune_amount=0.5,
        teacher_run=image_run,
        epochs=1,
        limit_train_batches=3,
    )
    assert report["reference"] == "teacher"
    models = report["models"]
    assert set(models) == {"teacher", "original", "compressed"}
    # Half of the prunable weights are zeros (biases and batch norm are not pruned).
    assert models["compressed"]["nonzero_parameters"] < 0.6 * models["teacher"]["parameters"]
    assert models["compressed"]["weights_gzip_bytes"] < models["teacher"]["weights_gzip_bytes"]
    assert 0.0 <= models["compressed"]["accuracy"] <= 1.0
    assert (out / "compress.md").is_file() and (out / "logs").is_dir()

    # The output is a run folder: it loads (masks made permanent) and exports.
    run = load_run(out)
    assert not any(name.endswith("_mask") for name in run.model.state_dict())
    convs = [m for m in run.model.modules() if isinstance(m, nn.Conv2d)]
    zeros = sum(int((m.weight == 0).sum()) for m in convs)
    assert zeros > 0.3 * sum(m.weight.numel() for m in convs)
    from longmm.deploy.export import export_run

    exported = export_run(out, tmp_path / "export", repeats=1, latency_samples=0)
    assert exported["parity"]["max_abs_diff"] <= 1e-4
    assert exported["engines"]["torch_fp32"]["accuracy"] == pytest.approx(
        models["compressed"]["accuracy"], abs=1e-6
    )


def test_structured_pruning_zeroes_whole_channels_but_not_the_classes(image_run: Path) -> None:
    model = load_run(image_run, setup=False).model
    targets = apply_pruning(model, 0.5, structured=True)
    make_permanent(targets)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    for conv in convs:
        dead = (conv.weight.flatten(1) == 0).all(dim=1)
        assert int(dead.sum()) == round(0.5 * conv.out_channels)
    out = model.head[-1].weight  # the class rows stay
    assert bool((out != 0).any(dim=1).all())


def test_distillation_refuses_a_teacher_of_other_data(image_run: Path, tmp_path: Path) -> None:
    # The same run, but its images normalized with other statistics.
    other = tmp_path / "other"
    shutil.copytree(image_run, other)
    ckpt = read_checkpoint(other / "checkpoints" / "best.ckpt")
    prep = json.loads(ckpt["ImageData"]["preprocessing"])
    prep["mean"] = [m + 0.1 for m in prep["mean"]]
    ckpt["ImageData"]["preprocessing"] = json.dumps(prep)
    torch.save(ckpt, other / "checkpoints" / "best.ckpt")
    with pytest.raises(LongmmError, match=r"prepared differently .*\(mean differ\)"):
        compress_run(image_run, tmp_path / "x", teacher_run=other, epochs=1)
    with pytest.raises(LongmmError, match="must be in"):
        compress_run(image_run, tmp_path / "y", prune_amount=1.5, epochs=1)


def test_pruning_a_bilstm_prunes_its_recurrent_weights(text_run: Path) -> None:
    model = load_run(text_run, setup=False).model
    make_permanent(apply_pruning(model, 0.5, structured=False))
    lstm = next(m for m in model.modules() if isinstance(m, nn.LSTM))
    share = float((lstm.weight_hh_l0 == 0).float().mean())
    assert 0.1 < share < 0.95
    assert torch.isfinite(model.head[-1].weight).all()

"""Two-step fits of the audio-visual fusion recipes through the command line, then a test of
the same checkpoint with each modality missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from longmm.cli import main

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
TWO_STEPS = [
    "--trainer.max_epochs", "1",
    "--trainer.limit_train_batches", "2",
    "--trainer.limit_val_batches", "1",
    "--trainer.limit_test_batches", "1",
    "--trainer.enable_progress_bar", "false",
    "--model.init_args.attribution_samples", "8",
]  # fmt: skip


def fit_and_test_missing(recipe: str, out: Path, extra: list[str], missing: list[str]) -> dict:
    main(["fit", "--config", str(RECIPES / recipe), *extra, *TWO_STEPS, "--out", str(out)])
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0
    assert (out / "checkpoints" / "best.ckpt").is_file() and (out / "report.md").is_file()
    for modality in missing:
        main(
            [
                "test",
                "--config", str(out / "config.yaml"),
                "--ckpt_path", str(out / "checkpoints" / "best.ckpt"),
                "--data.init_args.drop_at_test", f"[{modality}]",
                "--trainer.limit_test_batches", "1",
                "--trainer.enable_progress_bar", "false",
                "--out", str(out / f"missing_{modality}"),
            ]
        )  # fmt: skip
        tested = json.loads((out / f"missing_{modality}" / "metrics_test.json").read_text())
        assert 0.0 <= tested["accuracy"] <= 1.0
    return metrics


def test_embedded_fusion_recipe(tmp_path: Path) -> None:
    metrics = fit_and_test_missing("fusion_av_digits.yaml", tmp_path / "run", [], ["audio"])
    weights = metrics["test"]["modality_weights"]
    assert set(weights) == {"image", "audio"}
    assert sum(weights.values()) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared data folder {SHARED} is missing")
@pytest.mark.parametrize(
    ("recipe", "missing"),
    [
        ("fusion_av_mnist_fsdd.yaml", ["image", "audio"]),
        ("image_only_av.yaml", []),
        ("audio_only_av.yaml", ["image"]),
    ],
)
def test_real_recipes(tmp_path: Path, recipe: str, missing: list[str]) -> None:
    fit_and_test_missing(recipe, tmp_path / "run", ["--data.root", str(SHARED)], missing)

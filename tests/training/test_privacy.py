"""DP-SGD through Opacus: compatible layers, per-sample clipping, and epsilon accounting."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from longmm.encoders import ArticleCNN, AudioCNN
from longmm.errors import LongmmError
from longmm.fusion import WeightedFusion
from longmm.tasks.classify import Classify
from longmm.tasks.multitask import MultiTask
from longmm.training.privacy import DPSGD, make_dp_compatible

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def pairs(n: int = 64, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, 3, (n,), generator=g)
    image = torch.randn(n, 1, 8, 8, generator=g) * 0.3 + label.view(-1, 1, 1, 1)
    audio = torch.randn(n, 40, 12, generator=g) * 0.3 + label.view(-1, 1, 1)
    return [
        {
            "image": image[i],
            "audio": audio[i],
            "audio_mask": torch.ones(12, dtype=torch.bool),
            "label": label[i],
        }
        for i in range(n)
    ]


def classifier(**kw) -> Classify:
    torch.manual_seed(0)
    encoders = {
        "image": ArticleCNN(image_size=8, dim=8),
        "audio": AudioCNN(n_mels=40, dim=8, channels=[4, 8], dropout=0.0),  # batch norm
    }
    return Classify(encoders, fusion=WeightedFusion(out_dim=8, dropout=0.0), num_classes=3, **kw)


def fit(model: L.LightningModule, dp: DPSGD, tmp_path: Path, epochs: int) -> L.Trainer:
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[dp],
        default_root_dir=tmp_path,
    )
    loader = DataLoader(pairs(), batch_size=16)
    trainer.fit(model, loader, loader)
    trainer.test(model, loader, verbose=False)
    return trainer


def test_batch_norm_becomes_group_norm_and_activations_out_of_place() -> None:
    model = classifier()
    replaced = make_dp_compatible(model)
    assert replaced and all("BatchNorm2d -> GroupNorm" in r for r in replaced)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert not any(getattr(m, "inplace", False) for m in model.modules())


def test_dp_fit_reports_an_epsilon_that_grows_with_epochs(tmp_path: Path) -> None:
    eps = []
    for epochs in (1, 2):
        dp = DPSGD(noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5)
        model = classifier()
        trainer = fit(model, dp, tmp_path, epochs)
        privacy = model.eval_results["test"]["privacy"]
        assert privacy["delta"] == 1e-5 and privacy["sampling"] == "poisson"
        assert privacy["steps"] > 0 and privacy["sample_rate"] == pytest.approx(0.25)
        assert math.isfinite(privacy["epsilon"]) and privacy["epsilon"] > 0
        assert 0.0 <= model.eval_results["test"]["accuracy"] <= 1.0
        eps.append(privacy["epsilon"])
    assert eps[1] > eps[0]
    # The accountant travels in checkpoints: a test of a saved run reports its epsilon, and
    # the evaluated checkpoint's own steps.
    restored = DPSGD()
    restored.load_state_dict(dp.state_dict())
    restored.on_test_end(trainer, model)
    privacy = model.eval_results["test"]["privacy"]
    assert privacy["epsilon"] == pytest.approx(eps[1], rel=1e-6) and restored.steps == dp.steps
    assert privacy["checkpoint"]["epsilon"] == pytest.approx(eps[1], rel=1e-6)


def test_each_sample_gradient_is_clipped(tmp_path: Path) -> None:
    # No noise, plain SGD at rate 1: one step moves the parameters by the mean of the clipped
    # per-sample gradients, whose norm is at most max_grad_norm.
    model = classifier(
        optimizer="sgd", lr=1.0, momentum=0.0, weight_decay=0.0, scheduler="constant"
    )
    dp = DPSGD(noise_multiplier=0.0, max_grad_norm=1e-3, poisson_sampling=False)
    make_dp_compatible(model)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[dp],
        default_root_dir=tmp_path,
    )
    trainer.fit(model, DataLoader(pairs(16), batch_size=16))
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert 0 < float((after - before).norm()) <= 1e-3 * 1.0001


def test_target_epsilon_sets_the_noise(tmp_path: Path) -> None:
    dp = DPSGD(target_epsilon=8.0, delta=1e-5, max_grad_norm=1.0)
    model = classifier()
    fit(model, dp, tmp_path, 2)
    privacy = model.eval_results["test"]["privacy"]
    assert privacy["noise_multiplier"] > 0
    assert privacy["epsilon"] == pytest.approx(8.0, rel=0.05)


def test_a_task_with_parameters_of_its_own_is_refused(tmp_path: Path) -> None:
    model = MultiTask(
        {"image": ArticleCNN(image_size=8, dim=8)},
        targets={"label": 3, "speaker": 2},
        weighting="uncertainty",
    )
    with pytest.raises(LongmmError, match="parameters of its own"):
        fit(model, DPSGD(), tmp_path, 1)


def test_fit_of_the_recipe(tmp_path: Path) -> None:
    from longmm.cli import main

    out = tmp_path / "run"
    main(
        [
            "fit",
            "--config",
            str(RECIPES / "dp_av_digits.yaml"),
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_train_batches",
            "2",
            "--trainer.limit_val_batches",
            "1",
            "--trainer.limit_test_batches",
            "1",
            "--trainer.enable_progress_bar",
            "false",
            "--model.init_args.attribution_samples",
            "16",
            "--out",
            str(out),
        ]
    )
    assert (out / "plots" / "attribution.png").is_file()  # two modalities: attribution runs
    metrics = json.loads((out / "metrics.json").read_text())
    privacy = metrics["test"]["privacy"]
    assert privacy["steps"] == 2 and math.isfinite(privacy["epsilon"])


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared data folder {SHARED} is missing")
def test_fit_of_the_real_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from longmm.cli import main

    monkeypatch.chdir(RECIPES.parent)  # the recipe names ../shared/data
    out = tmp_path / "run"
    main(
        [
            "fit",
            "--config",
            str(RECIPES / "dp_av_mnist_fsdd.yaml"),
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_train_batches",
            "2",
            "--trainer.limit_val_batches",
            "1",
            "--trainer.limit_test_batches",
            "1",
            "--trainer.enable_progress_bar",
            "false",
            "--model.init_args.attribution_samples",
            "16",
            "--out",
            str(out),
        ]
    )
    privacy = json.loads((out / "metrics.json").read_text())["test"]["privacy"]
    assert privacy["steps"] == 2 and privacy["sample_rate"] == pytest.approx(1 / 55)

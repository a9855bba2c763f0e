"""DP-SGD through Opacus: compatible layers, per-sample clipping, and epsilon accounting."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from longmm.encoders import ArticleCNN
from longmm.errors import LongmmError
from longmm.fusion import WeightedFusion
from longmm.tasks.classify import Classify
from longmm.tasks.multitask import MultiTask
from longmm.training.privacy import DPSGD, make_dp_compatible


@pytest.fixture
def classifier(av_encoders):
    """A three-class classifier over an image and an audio encoder (with batch norm)."""

    def make(**kw) -> Classify:
        encoders = av_encoders(8)  # seeds torch first: the fusion draws after it
        fusion = WeightedFusion(out_dim=8, dropout=0.0)
        return Classify(encoders, fusion=fusion, num_classes=3, **kw)

    return make


@pytest.fixture
def fit(av_pairs, cpu_trainer):
    """Fits under ``dp`` on 64 samples in batches of 16 (validating on them), then tests."""

    def run(model, dp: DPSGD, epochs: int):
        trainer = cpu_trainer(max_epochs=epochs, num_sanity_val_steps=0, callbacks=[dp])
        loader = DataLoader(av_pairs(64, index=False), batch_size=16)
        trainer.fit(model, loader, loader)
        trainer.test(model, loader, verbose=False)
        return trainer

    return run


def test_batch_norm_becomes_group_norm_and_activations_out_of_place(classifier) -> None:
    model = classifier()
    replaced = make_dp_compatible(model)
    assert replaced and all("BatchNorm2d -> GroupNorm" in r for r in replaced)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert not any(getattr(m, "inplace", False) for m in model.modules())


def test_dp_fit_reports_an_epsilon_that_grows_with_epochs(classifier, fit) -> None:
    eps = []
    for epochs in (1, 2):
        dp = DPSGD(noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5)
        model = classifier()
        trainer = fit(model, dp, epochs)
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


def test_each_sample_gradient_is_clipped(classifier, av_pairs, cpu_trainer) -> None:
    # No noise, plain SGD at rate 1: one step moves the parameters by the mean of the clipped
    # per-sample gradients, whose norm is at most max_grad_norm.
    model = classifier(
        optimizer="sgd", lr=1.0, momentum=0.0, weight_decay=0.0, scheduler="constant"
    )
    dp = DPSGD(noise_multiplier=0.0, max_grad_norm=1e-3, poisson_sampling=False)
    make_dp_compatible(model)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    trainer = cpu_trainer(max_steps=1, num_sanity_val_steps=0, limit_val_batches=0, callbacks=[dp])
    trainer.fit(model, DataLoader(av_pairs(16, index=False), batch_size=16))
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert 0 < float((after - before).norm()) <= 1e-3 * 1.0001


def test_target_epsilon_sets_the_noise(classifier, fit) -> None:
    dp = DPSGD(target_epsilon=8.0, delta=1e-5, max_grad_norm=1.0)
    model = classifier()
    fit(model, dp, 2)
    privacy = model.eval_results["test"]["privacy"]
    assert privacy["noise_multiplier"] > 0
    assert privacy["epsilon"] == pytest.approx(8.0, rel=0.05)


def test_a_task_with_parameters_of_its_own_is_refused(fit) -> None:
    model = MultiTask(
        {"image": ArticleCNN(image_size=8, dim=8)},
        targets={"label": 3, "speaker": 2},
        weighting="uncertainty",
    )
    with pytest.raises(LongmmError, match="parameters of its own"):
        fit(model, DPSGD(), 1)


def test_fit_of_the_recipe(tmp_path: Path, fit_recipe) -> None:
    out = tmp_path / "run"
    metrics = fit_recipe("dp_av_digits.yaml", out, "--model.init_args.attribution_samples", "16")
    assert (out / "plots" / "attribution.png").is_file()  # two modalities: attribution runs
    privacy = metrics["test"]["privacy"]
    assert privacy["steps"] == 2 and math.isfinite(privacy["epsilon"])


@pytest.mark.slow
@pytest.mark.needs_shared
def test_fit_of_the_real_recipe(tmp_path: Path, fit_recipe) -> None:
    recipe, samples = "dp_av_mnist_fsdd.yaml", ["--model.init_args.attribution_samples", "16"]
    metrics = fit_recipe(recipe, tmp_path / "run", *samples, from_repo=True)
    privacy = metrics["test"]["privacy"]
    assert privacy["steps"] == 2 and privacy["sample_rate"] == pytest.approx(1 / 55)

"""MultiTask: shared encoders and fusion, a head per target, static or learned weighting."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from longmm.encoders import EncoderOutput
from longmm.errors import DataError
from longmm.fusion import LateFusion, WeightedFusion
from longmm.tasks.multitask import MultiTask

D = 16


class Flat(nn.Module):
    """The smallest encoder: one linear layer over the flattened input."""

    def __init__(self, width: int, dim: int = D) -> None:
        super().__init__()
        self.proj = nn.Linear(width, dim)
        self.dim = dim

    def forward(self, x: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        pooled = self.proj(x.flatten(1))
        ones = torch.ones(len(x), 1, dtype=torch.bool)
        return EncoderOutput(tokens=pooled[:, None], mask=ones, pooled=pooled)


@pytest.fixture
def model(av_encoders):
    """A MultiTask over the label and the speaker; ``flat`` swaps in Flat encoders."""

    def make(flat: bool = False, **kw) -> MultiTask:
        encoders = av_encoders(D)
        if flat:
            encoders = {"image": Flat(64), "audio": Flat(40 * 12)}
        args = {"targets": {"label": 3, "speaker": 2}, "fusion": WeightedFusion(out_dim=D), **kw}
        return MultiTask(encoders, **args)

    return make


def test_heads_per_target_and_static_weights(model, av_batch) -> None:
    m = model(weights={"label": 1.0, "speaker": 0.25})
    b = av_batch(speaker=True)
    logits = m(b)
    assert logits["label"].shape == (8, 3) and logits["speaker"].shape == (8, 2)
    losses = {"label": torch.tensor(2.0), "speaker": torch.tensor(4.0)}
    assert float(m.combine(losses)) == pytest.approx(2.0 + 0.25 * 4.0)
    assert m.loss_weights() == {"label": 1.0, "speaker": 0.25}
    loss = m.training_step(b, 0)
    loss.backward()
    assert m.heads["speaker"][1].weight.grad is not None
    assert m.encoders["audio"].proj.weight.grad is not None


def test_uncertainty_weighting_is_kendall_and_learns(model, av_batch) -> None:
    m = model(flat=True, weighting="uncertainty")
    with torch.no_grad():
        m.log_vars.copy_(torch.tensor([0.5, -1.0]))
    losses = {"label": torch.tensor(2.0), "speaker": torch.tensor(4.0)}
    expected = torch.exp(torch.tensor(-0.5)) * 2.0 + 0.25 + torch.exp(torch.tensor(1.0)) * 4 - 0.5
    assert float(m.combine(losses).detach()) == pytest.approx(float(expected), rel=1e-6)
    with torch.no_grad():
        m.log_vars.zero_()
    # The speaker is drawn anew at every step: nothing predicts it, its loss stays near
    # log 2, so its learned variance grows and its weight falls; the label's loss falls, so
    # its weight rises.
    b = av_batch(32, speaker=True)
    g = torch.Generator().manual_seed(1)
    optimizer = torch.optim.Adam(m.parameters(), lr=0.03)
    m.train()
    for _ in range(40):
        b["speaker"] = torch.randint(0, 2, (32,), generator=g)
        optimizer.zero_grad()
        m.training_step(b, 0).backward()
        optimizer.step()
    weights = m.loss_weights()
    assert weights["speaker"] < 0.8 < weights["label"]


def test_eval_results_per_target_and_main_accuracy(model, av_pairs, cpu_trainer) -> None:
    m = model()
    loader = DataLoader(av_pairs(48, speaker=True), batch_size=16)
    t = cpu_trainer(max_epochs=1)
    t.fit(m, loader, loader)
    t.test(m, loader, verbose=False)
    test = m.eval_results["test"]
    assert test["main_target"] == "label"
    assert test["accuracy"] == test["label"]["accuracy"]
    assert len(test["speaker"]["confusion_matrix"]) == 2
    assert test["speaker"]["count"] == 48
    assert set(test["modality_weights"]) == {"image", "audio"}
    assert m.monitor == "val/accuracy"


def test_bad_targets_and_labels_are_named(model, av_batch) -> None:
    with pytest.raises(ValueError, match="weights"):
        model(weights={"colour": 1.0})
    with pytest.raises(ValueError, match="uncertainty"):
        model(weighting="uncertainty", weights={"label": 2.0})
    with pytest.raises(ValueError, match="classifies by itself"):
        model(fusion=LateFusion(out_dim=D))
    with pytest.raises(ValueError, match="label classes"):
        model(num_classes=10)
    m = model()
    b = av_batch(speaker=True)
    del b["speaker"]
    with pytest.raises(DataError, match="speaker"):
        m.training_step(b, 0)
    b = av_batch(speaker=True)
    b["speaker"][0] = 5
    with pytest.raises(DataError, match="targets.speaker"):
        m.training_step(b, 0)

    class Data:
        num_classes = 3
        num_speakers = 4

    with pytest.raises(DataError, match="num_speakers|data has 4"):
        m.check_data(Data())


def test_fit_of_the_recipe(tmp_path: Path, fit_recipe) -> None:
    metrics = fit_recipe("multitask_av_digits.yaml", tmp_path / "run")
    assert set(metrics["test"]["speaker"]["per_class"]) == {f"synth{i}" for i in range(6)}
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0


@pytest.mark.slow
@pytest.mark.needs_shared
def test_fit_of_the_real_recipe(tmp_path: Path, fit_recipe) -> None:
    metrics = fit_recipe("multitask_av_mnist_fsdd.yaml", tmp_path / "run", from_repo=True)
    assert len(metrics["test"]["speaker"]["per_class"]) == 6

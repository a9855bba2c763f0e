"""MultiTask: shared encoders and fusion, a head per target, static or learned weighting."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from longmm.encoders import ArticleCNN, AudioCNN, EncoderOutput
from longmm.errors import DataError
from longmm.fusion import LateFusion, WeightedFusion
from longmm.tasks.multitask import MultiTask

D = 16
RECIPES = Path(__file__).resolve().parents[2] / "recipes"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def pairs(n: int = 48, seed: int = 0) -> list[dict]:
    """Image and audio both carry the label; the audio carries the speaker."""
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, 3, (n,), generator=g)
    speaker = torch.randint(0, 2, (n,), generator=g)
    image = torch.randn(n, 1, 8, 8, generator=g) * 0.3 + label.view(-1, 1, 1, 1)
    audio = torch.randn(n, 40, 12, generator=g) * 0.3 + label.view(-1, 1, 1)
    audio[:, :20] += 2.0 * speaker.view(-1, 1, 1)
    mask = torch.ones(n, 12, dtype=torch.bool)
    return [
        {
            "image": image[i],
            "audio": audio[i],
            "audio_mask": mask[i],
            "label": label[i],
            "speaker": speaker[i],
            "index": torch.tensor(i),
        }
        for i in range(n)
    ]


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


def model(flat: bool = False, **kw) -> MultiTask:
    torch.manual_seed(0)
    encoders = {
        "image": ArticleCNN(image_size=8, dim=D),
        "audio": AudioCNN(n_mels=40, dim=D, channels=[4, 8], dropout=0.0),
    }
    if flat:
        encoders = {"image": Flat(64), "audio": Flat(40 * 12)}
    args = {"targets": {"label": 3, "speaker": 2}, "fusion": WeightedFusion(out_dim=D), **kw}
    return MultiTask(encoders, **args)


def trainer(tmp_path: Path, epochs: int = 1) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )


def batch(n: int = 8, **kw) -> dict[str, torch.Tensor]:
    return {k: torch.stack([p[k] for p in pairs(n, **kw)]) for k in pairs(1)[0]}


def test_heads_per_target_and_static_weights() -> None:
    m = model(weights={"label": 1.0, "speaker": 0.25})
    b = batch()
    logits = m(b)
    assert logits["label"].shape == (8, 3) and logits["speaker"].shape == (8, 2)
    losses = {"label": torch.tensor(2.0), "speaker": torch.tensor(4.0)}
    assert float(m.combine(losses)) == pytest.approx(2.0 + 0.25 * 4.0)
    assert m.loss_weights() == {"label": 1.0, "speaker": 0.25}
    loss = m.training_step(b, 0)
    loss.backward()
    assert m.heads["speaker"][1].weight.grad is not None
    assert m.encoders["audio"].proj.weight.grad is not None


def test_uncertainty_weighting_is_kendall_and_learns() -> None:
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
    b = batch(32)
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


def test_eval_results_per_target_and_main_accuracy(tmp_path: Path) -> None:
    m = model()
    loader = DataLoader(pairs(), batch_size=16)
    t = trainer(tmp_path)
    t.fit(m, loader, loader)
    t.test(m, loader, verbose=False)
    test = m.eval_results["test"]
    assert test["main_target"] == "label"
    assert test["accuracy"] == test["label"]["accuracy"]
    assert len(test["speaker"]["confusion_matrix"]) == 2
    assert test["speaker"]["count"] == 48
    assert set(test["modality_weights"]) == {"image", "audio"}
    assert m.monitor == "val/accuracy"


def test_bad_targets_and_labels_are_named() -> None:
    with pytest.raises(ValueError, match="weights"):
        model(weights={"colour": 1.0})
    with pytest.raises(ValueError, match="uncertainty"):
        model(weighting="uncertainty", weights={"label": 2.0})
    with pytest.raises(ValueError, match="classifies by itself"):
        model(fusion=LateFusion(out_dim=D))
    with pytest.raises(ValueError, match="label classes"):
        model(num_classes=10)
    m = model()
    b = batch()
    del b["speaker"]
    with pytest.raises(DataError, match="speaker"):
        m.training_step(b, 0)
    b = batch()
    b["speaker"][0] = 5
    with pytest.raises(DataError, match="targets.speaker"):
        m.training_step(b, 0)

    class Data:
        num_classes = 3
        num_speakers = 4

    with pytest.raises(DataError, match="num_speakers|data has 4"):
        m.check_data(Data())


def test_fit_of_the_recipe(tmp_path: Path) -> None:
    from longmm.cli import main

    out = tmp_path / "run"
    main(
        [
            "fit",
            "--config",
            str(RECIPES / "multitask_av_digits.yaml"),
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
            "--out",
            str(out),
        ]
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]["speaker"]["per_class"]) == {f"synth{i}" for i in range(6)}
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0


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
            str(RECIPES / "multitask_av_mnist_fsdd.yaml"),
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
            "--out",
            str(out),
        ]
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["test"]["speaker"]["per_class"]) == 6

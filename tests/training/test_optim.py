"""Optimizers and schedules by name."""

from __future__ import annotations

import itertools
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from longmm.tasks.base import Task
from longmm.training.optim import build_optimizer, build_scheduler, param_groups


def lrs(name: str, steps: int = 100, **kw) -> list[float]:
    model = nn.Linear(2, 2)
    opt = build_optimizer(param_groups(model, 0.01), "sgd", lr=1.0)
    sched = build_scheduler(opt, name, total_steps=steps, steps_per_epoch=10, **kw)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_then_cosine() -> None:
    lr = lrs("cosine", warmup_steps=10)
    assert lr[0] == pytest.approx(0.1) and lr[9] == pytest.approx(1.0)
    assert lr[10] == pytest.approx(1.0) and lr[-1] < 0.01
    assert all(a >= b for a, b in itertools.pairwise(lr[10:]))


def test_step_schedule() -> None:
    lr = lrs("step", step_epochs=3, gamma=0.5)
    assert (
        lr[29] == pytest.approx(1.0)
        and lr[30] == pytest.approx(0.5)
        and lr[60] == pytest.approx(0.25)
    )


def test_onecycle_rises_then_falls() -> None:
    lr = lrs("onecycle")
    peak = max(range(100), key=lr.__getitem__)
    assert 20 <= peak <= 40 and lr[0] < lr[peak] and lr[-1] < lr[0]


def test_optimizers_and_decay_groups() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    groups = param_groups(model, 0.1)
    assert groups[0]["weight_decay"] == 0.1 and all(p.ndim > 1 for p in groups[0]["params"])
    assert groups[1]["weight_decay"] == 0.0 and len(groups[1]["params"]) == 3
    assert isinstance(build_optimizer(groups, "adam", 1e-3), torch.optim.Adam)
    assert isinstance(build_optimizer(groups, "adamw", 1e-3), torch.optim.AdamW)
    sgd = build_optimizer(groups, "sgd", 1e-2, momentum=0.9)
    assert sgd.param_groups[0]["momentum"] == 0.9
    with pytest.raises(ValueError, match="unknown name"):
        build_optimizer(groups, "lion", 1e-3)  # type: ignore[arg-type]


def test_lr_mult_groups_include_frozen_parameters() -> None:
    inner = nn.Linear(2, 2)
    inner.lr_mult = 0.5  # type: ignore[assignment]
    body = nn.Sequential(nn.Linear(2, 2), inner)
    body.lr_mult = 0.1  # type: ignore[assignment]
    model = nn.Sequential(body, nn.Linear(2, 3))
    body[0].weight.requires_grad_(False)  # frozen: still in a group, gets no update
    groups = param_groups(model, 0.01)
    assert [(g.get("lr_mult", 1.0), g["weight_decay"]) for g in groups] == [
        (1.0, 0.01), (1.0, 0.0), (0.1, 0.01), (0.1, 0.0), (0.5, 0.01), (0.5, 0.0),
    ]  # fmt: skip
    assert groups[2]["params"][0] is body[0].weight and groups[4]["params"][0] is inner.weight
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    opt = build_optimizer(groups, "adamw", lr=1e-2)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx(
        [1e-2, 1e-2, 1e-3, 1e-3, 5e-3, 5e-3]
    )
    assert param_groups(model, 0.01, lr=2.0)[4]["lr"] == 1.0
    frozen = body[0].weight.detach().clone()
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    assert torch.equal(body[0].weight, frozen)
    body.lr_mult = -1  # type: ignore[assignment]
    with pytest.raises(ValueError, match="0.lr_mult must be a number >= 0"):
        param_groups(model, 0.01)


class TinyTask(Task):
    """A real Task (its configure_optimizers) on 40 fixed samples, 5 steps an epoch, no
    randomness, recording the rate and Adam beta1 each step trains with."""

    def __init__(self) -> None:
        super().__init__(optimizer="adamw", lr=0.01, scheduler="onecycle")
        torch.manual_seed(0)
        self.net = nn.Linear(4, 3)
        self.seen: list[tuple[float, float]] = []

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        group = self.trainer.optimizers[0].param_groups[0]
        self.seen.append((group["lr"], group["betas"][0]))
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(1)
        data = TensorDataset(torch.randn(40, 4, generator=g), torch.arange(40) % 3)
        return DataLoader(data, batch_size=8)


class StopAt(L.Callback):
    """Fail when epoch ``epoch`` starts, after the checkpoint of the epoch before."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("stopped")


def fit(
    epochs: int, ckpt_path: Path | None = None, callbacks: list | None = None
) -> tuple[TinyTask, L.Trainer]:
    task = TinyTask()
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=bool(callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    trainer.fit(task, ckpt_path=ckpt_path)
    return task, trainer


def test_onecycle_resumed_with_more_epochs_follows_the_new_plan(tmp_path: Path) -> None:
    _, short = fit(2)
    short.save_checkpoint(tmp_path / "two.ckpt")
    resumed, trainer = fit(4, ckpt_path=tmp_path / "two.ckpt")  # failed: stepped past 10
    assert trainer.global_step == 20 and len(resumed.seen) == 10
    whole, _ = fit(4)
    # Steps 10..19 run on the 20-step plan: the rates and betas of an uninterrupted run.
    assert resumed.seen == whole.seen[10:]
    sched = trainer.lr_scheduler_configs[0].scheduler
    assert sched.total_steps == 20 and sched.last_epoch == 20
    peak = max(range(20), key=lambda i: whole.seen[i][0])
    assert 4 <= peak <= 7  # 30 % of the 20-step plan, not of the saved 10-step one


def test_onecycle_resumed_with_the_same_length_is_identical(tmp_path: Path) -> None:
    whole, _ = fit(4)
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    with pytest.raises(RuntimeError, match="stopped"):
        fit(4, callbacks=[ckpt, StopAt(2)])
    resumed, _ = fit(4, ckpt_path=tmp_path / "last.ckpt")
    assert resumed.seen == whole.seen[10:]
    assert all(
        torch.equal(a, b) for a, b in zip(resumed.parameters(), whole.parameters(), strict=True)
    )

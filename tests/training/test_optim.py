"""Optimizers and schedules by name."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

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

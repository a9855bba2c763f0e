"""Optimizers and per-step learning-rate schedules chosen by name in a recipe."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

OptimizerName = Literal["sgd", "adam", "adamw"]
SchedulerName = Literal["constant", "step", "cosine", "onecycle"]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and normalization parameters (1-D tensors)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(
    params: Iterable,
    name: OptimizerName,
    lr: float,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
) -> Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=momentum > 0)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas)
    raise ValueError(f"optimizer: unknown name {name!r} (choose sgd, adam, adamw)")


def build_scheduler(
    optimizer: Optimizer,
    name: SchedulerName,
    total_steps: int,
    steps_per_epoch: int,
    warmup_steps: int = 0,
    step_epochs: int = 10,
    gamma: float = 0.1,
    min_lr_ratio: float = 0.0,
) -> LRScheduler:
    """A schedule stepped once per optimizer step, with optional linear warm-up.

    ``step`` multiplies the rate by ``gamma`` every ``step_epochs`` epochs; ``cosine`` decays
    to ``min_lr_ratio`` of the base rate; ``onecycle`` is PyTorch's OneCycleLR (its own
    warm-up, ``warmup_steps`` sets its rising phase).
    """
    total_steps = max(total_steps, 1)
    if name == "onecycle":
        max_lrs = [g["lr"] for g in optimizer.param_groups]
        pct = warmup_steps / total_steps if warmup_steps else 0.3
        return OneCycleLR(
            optimizer, max_lr=max_lrs, total_steps=total_steps, pct_start=min(max(pct, 0.01), 0.99)
        )

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if name == "constant":
            return 1.0
        if name == "step":
            return gamma ** (step // max(step_epochs * steps_per_epoch, 1))
        if name == "cosine":
            progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
            return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        raise ValueError(
            f"scheduler: unknown name {name!r} (choose constant, step, cosine, onecycle)"
        )

    return LambdaLR(optimizer, factor)

"""Optimizers and per-step learning-rate schedules chosen by name in a recipe."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Literal

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

OptimizerName = Literal["sgd", "adam", "adamw"]
SchedulerName = Literal["constant", "step", "cosine", "onecycle"]


def param_groups(model: nn.Module, weight_decay: float, lr: float | None = None) -> list[dict]:
    """Parameter groups: no weight decay on biases and normalization parameters (1-D
    tensors), and a learning-rate multiplier per submodule.

    A submodule with a float attribute ``lr_mult`` puts its parameters (and its submodules',
    unless one sets its own) into groups of their own, marked ``lr_mult``; their rate is the
    base rate times ``lr_mult`` (set here when ``lr`` is given, else by ``build_optimizer``).
    The first two groups are always the base-rate decay and no-decay groups.

    Frozen parameters (``requires_grad=False``) are included: they get no gradient, so no
    update and no decay, and a module that unfreezes later trains on without a new optimizer
    (its Adam state and schedule carry on, and a resumed checkpoint's groups still match).
    """
    mults = _lr_mults(model)
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {(1.0, True): [], (1.0, False): []}
    for p in model.parameters():
        groups.setdefault((mults.get(id(p), 1.0), p.ndim > 1), []).append(p)
    out = []
    for (mult, decay), params in groups.items():
        group: dict = {"params": params, "weight_decay": weight_decay if decay else 0.0}
        if mult != 1.0:
            group["lr_mult"] = mult
            if lr is not None:
                group["lr"] = lr * mult
        out.append(group)
    return out


def _lr_mults(model: nn.Module) -> dict[int, float]:
    """``id(parameter) -> lr_mult`` of the innermost module that sets one."""
    mults: dict[int, float] = {}
    # named_modules() lists a module before its submodules, so inner settings win.
    for name, module in model.named_modules():
        mult = getattr(module, "lr_mult", None)
        if mult is None:
            continue
        if isinstance(mult, bool) or not isinstance(mult, int | float) or mult < 0:
            raise ValueError(f"{name or 'model'}.lr_mult must be a number >= 0, got {mult!r}")
        for p in module.parameters():
            mults[id(p)] = float(mult)
    return mults


def build_optimizer(
    params: Iterable,
    name: OptimizerName,
    lr: float,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
) -> Optimizer:
    params = [_with_rate(g, lr) if isinstance(g, dict) else g for g in params]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=momentum > 0)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas)
    raise ValueError(f"optimizer: unknown name {name!r} (choose sgd, adam, adamw)")


def _with_rate(group: dict, lr: float) -> dict:
    """A group marked ``lr_mult`` by ``param_groups`` gets ``lr * lr_mult`` unless set."""
    if "lr_mult" in group and "lr" not in group:
        return {**group, "lr": lr * group["lr_mult"]}
    return group


class ReplannedOneCycleLR(OneCycleLR):
    """OneCycleLR whose plan (``total_steps`` and phase ends) is the one it was built with.

    PyTorch's ``load_state_dict`` restores the saved plan too, so a run resumed with more
    epochs stepped past the old ``total_steps`` and failed. Here loading restores only the
    step counters and sets the rate (and momentum) of the restored step on the current plan:
    with the same length that is exactly the saved state, with another length the schedule
    carries on re-planned, like the LambdaLR schedules, whose plan is never saved.

    Call it after the optimizer's state is loaded (Lightning does): the plan's rates
    ``initial_lr``, ``max_lr`` and ``min_lr`` live in the optimizer's parameter groups.
    """

    _COUNTERS = ("last_epoch", "_step_count")

    def load_state_dict(self, state_dict: dict) -> None:
        missing = [k for k in self._COUNTERS if k not in state_dict]
        if missing:
            raise KeyError(f"onecycle scheduler state: missing {', '.join(missing)}")
        for key in self._COUNTERS:
            setattr(self, key, state_dict[key])
        if self.last_epoch > self.total_steps:
            # Past the end of the new, shorter plan: keep the saved rates; stepping further
            # fails in OneCycleLR.get_lr, naming both counts.
            self._last_lr = list(state_dict.get("_last_lr", self._last_lr))
            return
        with warnings.catch_warnings():
            # get_lr outside step() warns to use get_last_lr(); here it is computing it.
            warnings.filterwarnings("ignore", "To get the last learning rate", UserWarning)
            rates = self.get_lr()  # also sets the momentum or beta1 of this step
        for group, lr in zip(self.optimizer.param_groups, rates, strict=True):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


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

    Every schedule follows the plan built here for ``total_steps``: a resumed run keeps its
    step count but continues on the plan for its own (possibly new) length.
    """
    total_steps = max(total_steps, 1)
    if name == "onecycle":
        max_lrs = [g["lr"] for g in optimizer.param_groups]
        pct = warmup_steps / total_steps if warmup_steps else 0.3
        return ReplannedOneCycleLR(
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

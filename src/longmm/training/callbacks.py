"""Callbacks that the CLI adds to every run."""

from __future__ import annotations

import os
import random
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint


class EpochReseed(L.Callback):
    """Reseed every RNG at each training epoch from (run seed, epoch).

    Lightning's checkpoints do not carry RNG state, so without this a run resumed from
    ``last.ckpt`` would draw different dropout masks and augmentations than the run it
    continues. With it, a resumed run ends with the same weights as an uninterrupted one.
    """

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        base = int(os.environ.get("PL_GLOBAL_SEED", "0"))
        seed = (base * 1_000_003 + trainer.current_epoch) % (2**31)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)


class GradualUnfreeze(L.Callback):
    """Tell every submodule with ``apply_unfreeze_schedule(epoch)`` which epoch starts.

    Such a module (``PretrainedTextEncoder`` with ``unfreeze_at_epoch``) decides from the
    epoch alone which of its parameters train, so a run resumed from ``last.ckpt`` after the
    unfreeze epoch has the same parameters trainable as the run it continues. The frozen
    parameters are in the optimizer from the start (see ``param_groups``): unfreezing needs
    no new optimizer, and the learning-rate schedule carries on.
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning skips on_train_epoch_start when it resumes inside an epoch; this hook runs
        # on every fit, after a checkpoint is restored.
        apply_unfreeze_schedule(pl_module, trainer.current_epoch)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        apply_unfreeze_schedule(pl_module, trainer.current_epoch)


def apply_unfreeze_schedule(model: torch.nn.Module, epoch: int) -> list[str]:
    """Call ``apply_unfreeze_schedule(epoch)`` on every submodule that has it; their names."""
    names = []
    for name, module in model.named_modules():
        hook = getattr(module, "apply_unfreeze_schedule", None)
        if callable(hook) and module is not model:
            hook(epoch)
            names.append(name)
    return names


class LastCheckpoint(ModelCheckpoint):
    """Saves ``last.ckpt`` at the end of every epoch, improved or not.

    Lightning's ``save_last`` only copies when a top-k checkpoint is written, so after an
    epoch without improvement ``last.ckpt`` would lag behind. A distinct state key lets a
    recipe add its own monitor-free ModelCheckpoint beside this one.
    """

    def __init__(self, dirpath: str | Path) -> None:
        super().__init__(
            dirpath=dirpath,
            filename="last",
            monitor=None,
            save_top_k=1,
            enable_version_counter=False,
        )

    @property
    def state_key(self) -> str:
        return "longmm.LastCheckpoint"

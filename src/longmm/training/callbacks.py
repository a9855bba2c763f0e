"""Callbacks that the CLI adds to every run."""

from __future__ import annotations

import os
import random

import lightning as L
import numpy as np
import torch


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

"""What every task shares: optimizer and schedule chosen by name, and a monitored metric."""

from __future__ import annotations

import inspect
from typing import Any

import lightning as L
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters

from longmm.training.optim import (
    OptimizerName,
    SchedulerName,
    build_optimizer,
    build_scheduler,
    param_groups,
)


class Task(L.LightningModule):
    """Base LightningModule. Subclasses define the steps; this class owns optimization.

    The schedule is stepped every optimizer step; ``warmup_epochs`` may be fractional.
    """

    monitor: str = "val/loss"
    monitor_mode: str = "min"

    def __init__(
        self,
        optimizer: OptimizerName = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        momentum: float = 0.9,
        scheduler: SchedulerName = "cosine",
        warmup_epochs: float = 0.0,
        step_epochs: int = 10,
        gamma: float = 0.1,
    ) -> None:
        super().__init__()
        self.optimizer_name = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.momentum = momentum
        self.scheduler_name = scheduler
        self.warmup_epochs = warmup_epochs
        self.step_epochs = step_epochs
        self.gamma = gamma

    def save_recipe_hyperparameters(self, *modules: str) -> None:
        """Save hyperparameters so that ``load_from_checkpoint`` rebuilds the model.

        Built by the CLI, the recipe's own config (class paths of nested modules included) is
        saved. Built in Python, nested modules cannot be saved as config and are left out, so
        such a checkpoint loads into a model built by the caller.
        """
        from_recipe = _given_hyperparameters.get() is not None
        self.save_hyperparameters(ignore=[] if from_recipe else list(modules), logger=False)
        # The CLI links data.num_classes into every model's hyperparameters; a checkpoint that
        # kept an argument its class does not take could not rebuild the model.
        params = inspect.signature(type(self).__init__).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            for key in [k for k in self.hparams if not k.startswith("_") and k not in params]:
                self.hparams.pop(key)

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(
            param_groups(self, self.weight_decay),
            self.optimizer_name,
            self.lr,
            momentum=self.momentum,
        )
        total = int(self.trainer.estimated_stepping_batches)
        epochs = max(self.trainer.max_epochs or 1, 1)
        per_epoch = max(total // epochs, 1)
        scheduler = build_scheduler(
            optimizer,
            self.scheduler_name,
            total_steps=total,
            steps_per_epoch=per_epoch,
            warmup_steps=int(round(self.warmup_epochs * per_epoch)),
            step_epochs=self.step_epochs,
            gamma=self.gamma,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

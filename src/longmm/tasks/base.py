"""What every task shares: optimizer and schedule chosen by name, and a monitored metric.

The training options (optimizer, lr, weight_decay, momentum, scheduler, warmup_epochs,
step_epochs, gamma) are declared once, here. A task takes them as ``**training`` and passes
them on (``super().__init__(**training)``); jsonargparse follows that call, so recipes keep
the flat keys (``model.init_args.lr``) and checkpoints keep the same hyperparameters. A task
whose defaults differ names just those options and passes them on by name.
"""

from __future__ import annotations

import inspect
from pathlib import Path
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


def accepted_arguments(cls: type) -> set[str]:
    """The keyword arguments ``cls(...)`` takes: its ``__init__``'s, and where that passes
    ``**kwargs`` on to ``super().__init__``, its parents' (the convention of the tasks)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)} - {
            "self"
        }
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names


class Task(L.LightningModule):
    """Base LightningModule. Subclasses define the steps; this class owns optimization.

    The schedule is stepped every optimizer step; ``warmup_epochs`` may be fractional.

    Optional steps a task may have, called by ``longmm fit`` when the run folder is written
    (the defaults do nothing): ``write_artifacts(run)`` writes the task's own files and plots
    and returns the plots' paths; ``eval_results`` holds each evaluated stage's metrics.
    """

    monitor: str = "val/loss"
    monitor_mode: str = "min"
    eval_results: dict[str, dict[str, Any]]

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
        self.eval_results = {}

    def write_artifacts(self, run: Path) -> list[str]:
        """Write the task's own files into the run folder after a fit; the plots written
        (paths relative to ``run``), listed in the report."""
        return []

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
        accepted = accepted_arguments(type(self))
        for key in [k for k in self.hparams if not k.startswith("_") and k not in accepted]:
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

"""The training options are declared once (``Task``) and reach every task with its own
defaults, under the same flat recipe keys; checkpoints saved before still load."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from jsonargparse import ArgumentParser

from longmm.tasks import Task
from longmm.tasks.base import accepted_arguments
from longmm.tasks.classify import Classify
from longmm.tasks.contrastive import Contrastive
from longmm.tasks.extractive_qa import ExtractiveQA
from longmm.tasks.multitask import MultiTask
from longmm.tasks.rerank import Rerank
from longmm.tasks.span_head import SpanExtraction
from longmm.tasks.translate import Translate

COMMON = {
    "optimizer": "adamw",
    "weight_decay": 0.01,
    "momentum": 0.9,
    "scheduler": "cosine",
    "step_epochs": 10,
    "gamma": 0.1,
}
# (lr, warmup_epochs) each task had in its own signature before the options were shared.
DEFAULTS = {
    Classify: (1e-3, 0.0),
    Contrastive: (1e-3, 0.0),
    MultiTask: (1e-3, 0.0),
    Rerank: (5e-4, 0.05),
    ExtractiveQA: (5e-4, 0.05),
    SpanExtraction: (2e-3, 0.5),
    Translate: (7e-4, 1.0),
}


@pytest.mark.parametrize("task", list(DEFAULTS), ids=lambda t: t.__name__)
def test_recipes_see_the_flat_options_with_each_tasks_defaults(task: type[Task]) -> None:
    parser = ArgumentParser()
    parser.add_class_arguments(task, "model", skip={"encoders", "targets"})
    model = parser.get_defaults().model
    lr, warmup = DEFAULTS[task]
    assert (model.lr, model.warmup_epochs) == (lr, warmup)
    assert {k: model[k] for k in COMMON} == COMMON
    assert set(COMMON) | {"lr", "warmup_epochs"} <= accepted_arguments(task)


def test_a_task_built_in_python_takes_the_options_by_keyword() -> None:
    task = SpanExtraction(dim=16, heads=2, lr=0.01, scheduler="step", gamma=0.5)
    assert (task.lr, task.scheduler_name, task.gamma, task.warmup_epochs) == (
        0.01,
        "step",
        0.5,
        0.5,
    )
    assert task.hparams["lr"] == 0.01 and task.hparams["warmup_epochs"] == 0.5
    with pytest.raises(TypeError, match="learning_rate"):
        SpanExtraction(learning_rate=0.1)


def test_a_checkpoint_written_before_the_options_were_shared_loads(tmp_path: Path) -> None:
    """A checkpoint as the old signature saved it: every option flat in its hyperparameters,
    plus the ``num_classes`` the CLI links into every model."""
    model = SpanExtraction(dim=16, heads=2, layers=1)
    hparams = {
        "dim": 16,
        "heads": 2,
        "layers": 1,
        "dropout": 0.1,
        "max_answer_tokens": 24,
        "optimizer": "sgd",
        "lr": 0.05,
        "weight_decay": 0.0,
        "momentum": 0.8,
        "scheduler": "step",
        "warmup_epochs": 0.25,
        "step_epochs": 3,
        "gamma": 0.5,
    }
    path = tmp_path / "old.ckpt"
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": hparams,
            "pytorch-lightning_version": L.__version__,
        },
        path,
    )
    loaded = SpanExtraction.load_from_checkpoint(path, weights_only=True)
    assert (loaded.optimizer_name, loaded.lr, loaded.momentum) == ("sgd", 0.05, 0.8)
    assert (loaded.scheduler_name, loaded.step_epochs, loaded.gamma) == ("step", 3, 0.5)
    assert loaded.warmup_epochs == 0.25 and loaded.weight_decay == 0.0
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_hyperparameters_drop_what_no_class_in_the_chain_takes() -> None:
    """The CLI links ``num_classes`` into every model; a task that does not take it must not
    keep it, or its checkpoint could not rebuild it."""
    assert "num_classes" not in accepted_arguments(SpanExtraction)
    assert "num_classes" in accepted_arguments(Rerank)  # through AdaptedTask
    assert {"temperature", "rank", "lr", "gamma"} <= accepted_arguments(Rerank)

"""A ``longmm fit`` run folder back in memory: the trained model, its data module restored
to the training preprocessing (tokenizer, normalization statistics), and prepared batches."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from longmm.errors import CheckpointError, DataError, LongmmError
from longmm.runs import read_checkpoint

Batch = dict[str, Tensor]


@dataclass
class LoadedRun:
    path: Path
    config: dict[str, Any]  # the run's resolved config.yaml
    model: Any  # a longmm.tasks.Classify in eval mode, on the CPU
    datamodule: Any  # its SourceDataModule, set up with the run's preprocessing
    checkpoint: Path

    @property
    def classes(self) -> list[str]:
        return list(getattr(self.datamodule, "classes", []) or [])


def run_checkpoint(run: Path) -> Path:
    for name in ("best.ckpt", "last.ckpt"):
        path = run / "checkpoints" / name
        if path.is_file():
            return path
    raise CheckpointError(
        f"{run}: no checkpoints/best.ckpt (give a run folder written by `longmm fit`)"
    )


def read_run_config(run: Path) -> dict[str, Any]:
    path = run / "config.yaml"
    if not path.is_file():
        raise LongmmError(f"{path}: not found (give a run folder written by `longmm fit`)")
    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict) or "model" not in config or "data" not in config:
        raise LongmmError(f"{path}: not a longmm run config (no 'model' and 'data' sections)")
    return config


def build_datamodule(data_config: dict[str, Any], data_root: str | None = None) -> Any:
    """The data module a run's ``data:`` section describes (nested classes included)."""
    from jsonargparse import ArgumentParser

    from longmm.data import SourceDataModule

    config = {**data_config, "init_args": dict(data_config.get("init_args") or {})}
    if data_root is not None:
        config["init_args"]["root"] = data_root
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(SourceDataModule, "data", required=True)
    try:
        parsed = parser.parse_object({"data": config})
    except Exception as err:  # jsonargparse raises its own ArgumentError
        raise LongmmError(f"config.yaml 'data' section: {err}") from err
    return parser.instantiate_classes(parsed).data


def load_run(run_dir: str | Path, data_root: str | None = None, setup: bool = True) -> LoadedRun:
    """Load a classifier run folder: model from its best checkpoint (eval mode, CPU) and its
    data module with the saved preprocessing state (tokenizer, normalizers), set up.

    ``data_root`` replaces the recipe's ``data.root`` (a relative root is read from the
    current folder, as at training time)."""
    from longmm.tasks import Classify

    run = Path(run_dir)
    if not run.is_dir():
        raise LongmmError(f"{run}: run folder not found")
    config = read_run_config(run)
    ckpt_path = run_checkpoint(run)
    ckpt = read_checkpoint(ckpt_path)
    class_path = str(ckpt.get("hyper_parameters", {}).get("_class_path", ""))
    if not class_path.endswith(".Classify"):
        raise LongmmError(
            f"{ckpt_path}: a {class_path or 'non-recipe'} checkpoint; export and compress "
            f"take classifier runs (longmm.tasks.Classify)"
        )
    model = Classify.load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=True)
    model.eval()
    datamodule = build_datamodule(config["data"], data_root)
    state = ckpt.get(type(datamodule).__qualname__)
    if state and hasattr(datamodule, "load_state_dict"):
        datamodule.load_state_dict(state)  # the run's tokenizer and statistics, not refitted
    if setup:
        try:
            datamodule.setup("fit")
        except DataError as err:
            if err.where != "data.root":
                raise
            raise DataError(
                "data.root",
                f"{err.reason} (a relative root is read from the current folder, as when "
                f"`longmm fit` ran; give --data-root)",
            ) from err
    return LoadedRun(run, config, model, datamodule, ckpt_path)


def prepare(datamodule: Any, batch: Batch) -> Batch:
    """A loader batch as a step sees it: through the data module's batch hooks (outside a
    trainer, so augmentation and token dropout stay off)."""
    if hasattr(datamodule, "on_before_batch_transfer"):
        batch = datamodule.on_before_batch_transfer(batch, 0)
    if hasattr(datamodule, "on_after_batch_transfer"):
        batch = datamodule.on_after_batch_transfer(batch, 0)
    return batch


def prepared_batches(datamodule: Any, split: str, limit: int | None = None) -> Iterator[Batch]:
    """Up to ``limit`` prepared batches of ``split`` (train batches in a fixed order)."""
    loaders = {
        "train": datamodule.train_dataloader,
        "val": datamodule.val_dataloader,
        "test": datamodule.test_dataloader,
    }
    with torch.no_grad():
        for i, batch in enumerate(loaders[split]()):
            if limit is not None and i >= limit:
                return
            yield prepare(datamodule, batch)


def model_inputs(model: nn.Module, batch: Batch) -> list[str]:
    """The batch keys a classifier reads: each encoder's modality and, when the batch has
    it, that modality's mask, in encoder order."""
    names: list[str] = []
    for modality in model.encoders:
        if modality in batch:
            names.append(modality)
            if f"{modality}_mask" in batch:
                names.append(f"{modality}_mask")
    if not names:
        raise LongmmError(f"the batch has none of the model's modalities {list(model.encoders)}")
    return names

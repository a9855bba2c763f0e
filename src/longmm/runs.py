"""Run folders: atomic checkpoints, safetensors weights, and clear errors on bad files."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from longmm.errors import CheckpointError
from longmm.io import atomic_path


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a Lightning checkpoint without unpickling code; name the file when it is bad."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint is empty (0 bytes)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise CheckpointError(
            f"{path}: truncated or corrupt checkpoint ({str(err).splitlines()[0]})"
        ) from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a longmm/Lightning checkpoint (no 'state_dict')")
    return ckpt


def read_best_checkpoint(run_dir: str | Path, task: str) -> tuple[Path, dict[str, Any]]:
    """``checkpoints/best.ckpt`` of a ``longmm fit`` run folder, read (see
    :func:`read_checkpoint`) and checked to come from the task class ``task`` (``"GAN"``,
    ``"Classify"``, ...) when it records its class. Errors name the folder or the file."""
    run = Path(run_dir)
    if not run.is_dir():
        raise CheckpointError(f"{run}: run folder not found")
    path = run / "checkpoints" / "best.ckpt"
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found (has `longmm fit` finished there?)")
    ckpt = read_checkpoint(path)
    class_path = str(ckpt.get("hyper_parameters", {}).get("_class_path", ""))
    if class_path and class_path.rsplit(".", 1)[-1] != task:
        raise CheckpointError(
            f"{path}: a {class_path.rsplit('.', 1)[-1]} run, where a {task} run is needed"
        )
    return path, ckpt


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes to a temporary name and renames on success, and
    reports a truncated or corrupt checkpoint by its path."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(
        self, path: str | Path, map_location: Any = None, weights_only: bool | None = None
    ) -> dict:
        return read_checkpoint(path, map_location=map_location or "cpu")


def save_weights(
    state_dict: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None
) -> None:
    """Weights as safetensors (contiguous, de-aliased copies), written atomically."""
    tensors = {
        k: v.detach().cpu().contiguous().clone()
        for k, v in state_dict.items()
        if isinstance(v, torch.Tensor)
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({err})") from err


def export_best_weights(ckpt_path: str | Path, out_path: str | Path) -> None:
    ckpt = read_checkpoint(ckpt_path)
    save_weights(ckpt["state_dict"], out_path, metadata={"source_checkpoint": Path(ckpt_path).name})

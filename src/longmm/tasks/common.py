"""What the multimodal tasks share: encoding a batch, binding and running a fusion, the
fusion's mean modality weights, and encoder weights taken from another run."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longmm.encoders.base import EncoderOutput
from longmm.errors import CheckpointError, DataError
from longmm.fusion.base import FusionOutput


def bind_fusion(fusion: nn.Module | None, encoders: dict[str, nn.Module], num_classes: int) -> None:
    """Bind ``fusion`` (when it has ``bind``) to the encoders' pooled and token widths, so its
    parameters exist before the optimizer is built or a checkpoint loaded."""
    if fusion is not None and hasattr(fusion, "bind"):
        fusion.bind(
            {m: enc.dim for m, enc in encoders.items()},
            num_classes,
            token_dims={m: getattr(enc, "token_dim", enc.dim) for m, enc in encoders.items()},
        )


def fused_dim(encoders: dict[str, nn.Module], fusion: nn.Module | None) -> int:
    """Width of the vector a head reads: the fusion's ``out_dim``, else the (single)
    encoder's pooled width."""
    dim = getattr(fusion, "out_dim", None) if fusion is not None else None
    return int(dim or next(iter(encoders.values())).dim)


def encode(encoders: nn.ModuleDict, batch: dict[str, Tensor]) -> dict[str, EncoderOutput]:
    """Each encoder on its modality, for the modalities in the batch. Sequence modalities
    come with a mask (``text_mask``, ``audio_mask``); images do not."""
    present = {
        m: enc(batch[m], batch[f"{m}_mask"]) if f"{m}_mask" in batch else enc(batch[m])
        for m, enc in encoders.items()
        if m in batch
    }
    if not present:
        raise DataError("batch", f"none of the modalities {list(encoders)} is in the batch")
    return present


def encode_and_fuse(
    encoders: nn.ModuleDict,
    fusion: nn.Module | None,
    batch: dict[str, Tensor],
    modality_dropout: nn.Module | None = None,
) -> tuple[Tensor, FusionOutput | None]:
    """The vector a head reads ``(B, D)`` and the fusion's output (None without a fusion).

    Without a fusion the single encoder's pooled vector is returned. With one,
    ``modality_dropout`` (training only) masks modalities before the fusion; when the fusion
    returns its own ``logits`` they are in the ``FusionOutput``.
    """
    outputs = encode(encoders, batch)
    if fusion is None:
        return next(iter(outputs.values())).pooled, None
    if modality_dropout is not None:
        outputs = modality_dropout(outputs)
    fused = fusion(outputs)
    if isinstance(fused, Tensor):
        fused = FusionOutput(fused=fused)
    return fused.fused, fused


class ModalityWeightMeans:
    """Sums of a fusion's per-sample modality weights over an evaluation pass; ``compute``
    gives the means (summed over processes first) and starts over."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.count = 0

    def update(self, weights: dict[str, Tensor] | None) -> None:
        if not weights:
            return
        for m, w in weights.items():
            total = w.detach().double().sum()
            self.sums[m] = self.sums.get(m, 0) + total
        self.count += len(next(iter(weights.values())))

    def compute(self, module: nn.Module) -> dict[str, float] | None:
        """Means per modality (rounded to 6 places), or None when nothing was seen.
        ``module`` is the LightningModule: its trainer, when attached, sums over processes."""
        if not self.sums:
            return None
        names = sorted(self.sums)
        device = self.sums[names[0]].device
        sums = torch.stack(
            [self.sums[m] for m in names]
            + [torch.tensor(float(self.count), dtype=torch.float64, device=device)]
        )
        trainer = getattr(module, "_trainer", None)
        if trainer is not None and trainer.world_size > 1:
            sums = trainer.strategy.reduce(sums, reduce_op="sum")
        self.reset()
        count = float(sums[-1])
        return {m: round(float(sums[i]) / max(count, 1.0), 6) for i, m in enumerate(names)}


def pretrained_weights_path(run: str | Path) -> Path:
    """The weights of a ``longmm fit`` run folder (``checkpoints/best.safetensors``), or a
    ``.safetensors`` file given directly."""
    path = Path(run)
    if path.is_dir():
        path = path / "checkpoints" / "best.safetensors"
    if not path.is_file():
        raise CheckpointError(
            f"init_from: {path} not found (give a run folder written by `longmm fit`, or a "
            f".safetensors file)"
        )
    return path


def load_encoder_weights(encoders: nn.ModuleDict, run: str | Path) -> list[str]:
    """Copy ``encoders.<modality>.*`` weights from another run (a contrastive pretraining,
    a classifier, ...) into ``encoders``, for every modality both have; the modalities loaded.

    Every tensor of a loaded encoder must be in the file with the same shape: a missing key,
    an extra key or a mismatched shape is an error that names them (the recipe's encoder
    must be built like the pretrained one). Modalities the file does not have are left as
    they are, but at least one must match.
    """
    from longmm.runs import load_weights

    path = pretrained_weights_path(run)
    weights = load_weights(path)
    available = sorted({k.split(".")[1] for k in weights if k.startswith("encoders.")})
    loaded = []
    for m, enc in encoders.items():
        prefix = f"encoders.{m}."
        state = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
        if not state:
            continue
        own = enc.state_dict()
        missing = sorted(set(own) - set(state))
        extra = sorted(set(state) - set(own))
        shapes = [
            f"{k}: file {tuple(state[k].shape)}, model {tuple(own[k].shape)}"
            for k in sorted(set(own) & set(state))
            if state[k].shape != own[k].shape
        ]
        if missing or extra or shapes:
            parts = []
            if shapes:
                parts.append("shape mismatch " + "; ".join(shapes[:5]))
            if missing:
                parts.append(f"missing in the file {missing[:5]}")
            if extra:
                parts.append(f"not in the model {extra[:5]}")
            raise CheckpointError(
                f"init_from {path}: encoder {m!r} does not match the pretrained one ("
                + "; ".join(parts)
                + "); build it with the same arguments as in the pretraining recipe"
            )
        enc.load_state_dict(state)
        loaded.append(m)
    if not loaded:
        raise CheckpointError(
            f"init_from {path}: no encoder of {list(encoders)} is in the file "
            f"(it has encoders {available})"
        )
    return loaded


class SpanSteps:
    """The steps of the span-extraction tasks (mixed in before ``Task``): the mean of start and
    end cross-entropy over ``logits(batch)`` (two ``(B, L)``), and evaluation through the
    task's own ``_eval_step(batch, stage)`` and ``_eval_end(stage)``."""

    def logits(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _eval_step(self, batch: dict[str, Tensor], stage: str) -> None:
        raise NotImplementedError

    def _eval_end(self, stage: str) -> None:
        raise NotImplementedError

    def _loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        start, end = self.logits(batch)
        loss = (F.cross_entropy(start, batch["start"]) + F.cross_entropy(end, batch["end"])) / 2
        return loss, start, end

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss, _, _ = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["start"]))  # type: ignore[attr-defined]
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")

"""Classification over one modality or several fused ones."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from longmm.encoders.base import EncoderOutput
from longmm.errors import DataError
from longmm.evaluation.metrics import ClassificationMetrics
from longmm.fusion.base import FusionOutput
from longmm.fusion.dropout import ModalityDropout
from longmm.tasks.base import Task
from longmm.training.optim import OptimizerName, SchedulerName


class Classify(Task):
    """Encoders per modality, an optional fusion, and a linear head over ``num_classes``.

    With a single encoder and no fusion the encoder's pooled vector feeds the head.
    ``num_classes`` is linked from the data module by the CLI.

    A fusion (``longmm.fusion``) is bound here to the encoders' widths, so its parameters
    exist before the optimizer is built or a checkpoint loaded. A fusion that returns its own
    ``logits`` (``LateFusion``) replaces the head; otherwise the head reads ``fused``.
    ``modality_dropout`` masks whole modalities per sample on training batches. When the
    fusion returns per-modality weights, their test-set means are in
    ``eval_results["test"]["modality_weights"]``.
    """

    monitor = "val/accuracy"
    monitor_mode = "max"

    def __init__(
        self,
        encoders: dict[str, nn.Module],
        fusion: nn.Module | None = None,
        num_classes: int = 2,
        head_dropout: float = 0.0,
        label_smoothing: float = 0.0,
        optimizer: OptimizerName = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        momentum: float = 0.9,
        scheduler: SchedulerName = "cosine",
        warmup_epochs: float = 0.0,
        step_epochs: int = 10,
        gamma: float = 0.1,
        modality_dropout: ModalityDropout | None = None,
    ) -> None:
        super().__init__(
            optimizer=optimizer,
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            scheduler=scheduler,
            warmup_epochs=warmup_epochs,
            step_epochs=step_epochs,
            gamma=gamma,
        )
        if not encoders:
            raise ValueError("Classify needs at least one encoder")
        if fusion is None and len(encoders) > 1:
            raise ValueError("several encoders need a fusion module")
        if modality_dropout is not None and fusion is None:
            raise ValueError("modality_dropout needs a fusion module (it masks modalities)")
        self.save_recipe_hyperparameters("encoders", "fusion", "modality_dropout")
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = fusion
        self.modality_dropout = modality_dropout
        if fusion is not None and hasattr(fusion, "bind"):
            fusion.bind(
                {m: enc.dim for m, enc in encoders.items()},
                num_classes,
                token_dims={m: getattr(enc, "token_dim", enc.dim) for m, enc in encoders.items()},
            )
        self.head: nn.Module | None = None
        if not getattr(fusion, "produces_logits", False):
            dim = getattr(fusion, "out_dim", None) if fusion is not None else None
            dim = dim or next(iter(encoders.values())).dim
            self.head = nn.Sequential(nn.Dropout(head_dropout), nn.Linear(dim, num_classes))
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.train_accuracy = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.eval_metrics = ClassificationMetrics(num_classes)
        self.eval_results: dict[str, dict[str, Any]] = {}
        self._weight_sums: dict[str, Tensor] = {}
        self._weight_count = 0

    # -- model -------------------------------------------------------------------------------
    def encode(self, batch: dict[str, Tensor]) -> dict[str, EncoderOutput]:
        # Sequence modalities come with a mask (`text_mask`, `audio_mask`); images do not.
        present = {
            m: enc(batch[m], batch[f"{m}_mask"]) if f"{m}_mask" in batch else enc(batch[m])
            for m, enc in self.encoders.items()
            if m in batch
        }
        if not present:
            raise DataError(
                "batch", f"none of the modalities {list(self.encoders)} is in the batch"
            )
        return present

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.classify(batch)[0]  # (B, num_classes)

    def classify(self, batch: dict[str, Tensor]) -> tuple[Tensor, FusionOutput | None]:
        """Logits ``(B, num_classes)`` and the fusion's output (None without a fusion)."""
        outputs = self.encode(batch)
        if self.fusion is None:
            assert self.head is not None
            return self.head(next(iter(outputs.values())).pooled), None
        if self.modality_dropout is not None:
            outputs = self.modality_dropout(outputs)
        fused = self.fusion(outputs)
        if isinstance(fused, Tensor):
            fused = FusionOutput(fused=fused)
        if fused.logits is not None:
            return fused.logits, fused
        if self.head is None:
            raise RuntimeError(f"{type(self.fusion).__name__} returned no logits to classify")
        return self.head(fused.fused), fused

    # -- steps -------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        logits = self(batch)
        loss = F.cross_entropy(logits, batch["label"], label_smoothing=self.label_smoothing)
        self.train_accuracy(logits.argmax(-1), batch["label"])
        bs = len(batch["label"])
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=bs)
        self.log("train/accuracy", self.train_accuracy, on_step=False, on_epoch=True, batch_size=bs)
        return loss

    def _eval_step(self, batch: dict[str, Tensor], stage: str) -> None:
        logits, fused = self.classify(batch)
        if stage == "test" and fused is not None and fused.weights:
            self._accumulate_weights(fused.weights)
        loss = F.cross_entropy(logits, batch["label"])
        self.eval_metrics.update(logits, batch["label"])
        self.log(
            f"{stage}/loss", loss, on_epoch=True, prog_bar=stage == "val", batch_size=len(logits)
        )

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _accumulate_weights(self, weights: dict[str, Tensor]) -> None:
        for m, w in weights.items():
            total = w.detach().double().sum()
            self._weight_sums[m] = self._weight_sums.get(m, 0) + total
        self._weight_count += len(next(iter(weights.values())))

    def _mean_weights(self) -> dict[str, float] | None:
        """Mean per-modality fusion weights over the samples seen; summed over processes."""
        if not self._weight_sums:
            return None
        names = sorted(self._weight_sums)
        sums = torch.stack(
            [self._weight_sums[m] for m in names]
            + [torch.tensor(float(self._weight_count), dtype=torch.float64, device=self.device)]
        )
        if self._trainer is not None and self.trainer.world_size > 1:
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        self._weight_sums, self._weight_count = {}, 0
        count = float(sums[-1])
        return {m: round(float(sums[i]) / max(count, 1.0), 6) for i, m in enumerate(names)}

    def _eval_epoch_end(self, stage: str) -> None:
        results = self.eval_metrics.compute(self.class_names())
        self.eval_metrics.reset()
        if stage == "test":
            weights = self._mean_weights()
            if weights is not None:
                results["modality_weights"] = weights
        self.eval_results[stage] = results
        for key in ("accuracy", "f1_macro", "balanced_accuracy"):
            self.log(f"{stage}/{key}", results[key], prog_bar=key == "accuracy")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_start(self) -> None:
        self._weight_sums, self._weight_count = {}, 0

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        probs = torch.softmax(self(batch), dim=-1)
        conf, pred = probs.max(dim=-1)
        out = {"pred": pred, "prob": conf, "probs": probs}
        for key in ("index", "label"):
            if key in batch:
                out[key] = batch[key]
        return out

    def class_names(self) -> list[str] | None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        names = getattr(dm, "classes", None)
        return list(names) if names and len(names) == self.num_classes else None

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
from longmm.tasks.base import Task
from longmm.training.optim import OptimizerName, SchedulerName


class Classify(Task):
    """Encoders per modality, an optional fusion, and a linear head over ``num_classes``.

    With a single encoder and no fusion the encoder's pooled vector feeds the head.
    ``num_classes`` is linked from the data module by the CLI.
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
        self.save_recipe_hyperparameters("encoders", "fusion")
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = fusion
        dim = getattr(fusion, "out_dim", None) if fusion is not None else None
        dim = dim or next(iter(encoders.values())).dim
        self.head = nn.Sequential(nn.Dropout(head_dropout), nn.Linear(dim, num_classes))
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.train_accuracy = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.eval_metrics = ClassificationMetrics(num_classes)
        self.eval_results: dict[str, dict[str, Any]] = {}

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
        outputs = self.encode(batch)
        if self.fusion is None:
            features = next(iter(outputs.values())).pooled
        else:
            fused = self.fusion(outputs)
            features = fused if isinstance(fused, Tensor) else fused.fused
        return self.head(features)  # (B, num_classes)

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
        logits = self(batch)
        loss = F.cross_entropy(logits, batch["label"])
        self.eval_metrics.update(logits, batch["label"])
        self.log(
            f"{stage}/loss", loss, on_epoch=True, prog_bar=stage == "val", batch_size=len(logits)
        )

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _eval_epoch_end(self, stage: str) -> None:
        results = self.eval_metrics.compute(self.class_names())
        self.eval_metrics.reset()
        self.eval_results[stage] = results
        for key in ("accuracy", "f1_macro", "balanced_accuracy"):
            self.log(f"{stage}/{key}", results[key], prog_bar=key == "accuracy")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

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

"""Classification over one modality or several fused ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from longmm.encoders.base import EncoderOutput
from longmm.evaluation.metrics import ClassificationMetrics
from longmm.fusion.base import FusionOutput
from longmm.fusion.dropout import ModalityDropout
from longmm.tasks.base import Task
from longmm.tasks.common import (
    ModalityWeightMeans,
    bind_fusion,
    encode,
    encode_and_fuse,
    fused_dim,
    load_encoder_weights,
)


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

    Transfer: ``init_from`` (a run folder, or a ``.safetensors`` file) copies the weights of
    every encoder that run has under ``encoders.<modality>.`` (a ``Contrastive`` pretraining,
    another classifier) when training starts; shapes must match. ``freeze_encoders`` keeps
    the encoders fixed (no gradient, and in eval mode, so batch-norm statistics and dropout
    stay as pretrained): with a single encoder that is a linear probe; without it, the
    encoders are fine-tuned.

    With two or more modalities, ``write_artifacts`` measures each modality's share of the
    decisions with integrated gradients over the first ``attribution_samples`` test samples
    (0 turns it off) and writes ``plots/attribution.png``, ``attribution.json`` and
    ``attribution.md`` (also in ``report_sections``).
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
        modality_dropout: ModalityDropout | None = None,
        init_from: str | None = None,
        freeze_encoders: bool = False,
        attribution_samples: int = 256,
        attribution_steps: int = 32,
        **training: Any,
    ) -> None:
        super().__init__(**training)
        if not encoders:
            raise ValueError("Classify needs at least one encoder")
        if fusion is None and len(encoders) > 1:
            raise ValueError("several encoders need a fusion module")
        if modality_dropout is not None and fusion is None:
            raise ValueError("modality_dropout needs a fusion module (it masks modalities)")
        if attribution_samples < 0 or attribution_steps < 1:
            raise ValueError(
                f"attribution_samples must be >= 0 and attribution_steps >= 1, got "
                f"{attribution_samples}, {attribution_steps}"
            )
        self.save_recipe_hyperparameters("encoders", "fusion", "modality_dropout")
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = fusion
        self.modality_dropout = modality_dropout
        bind_fusion(fusion, encoders, num_classes)
        self.head: nn.Module | None = None
        if not getattr(fusion, "produces_logits", False):
            dim = fused_dim(encoders, fusion)
            self.head = nn.Sequential(nn.Dropout(head_dropout), nn.Linear(dim, num_classes))
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.init_from = init_from
        self.freeze_encoders = freeze_encoders
        self.attribution_samples = attribution_samples
        self.attribution_steps = attribution_steps
        self._encoders_loaded = False
        if freeze_encoders:
            self.encoders.requires_grad_(False)
        self.train_accuracy = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.eval_metrics = ClassificationMetrics(num_classes)
        self.report_sections: list[str] = []
        self._weights = ModalityWeightMeans()

    # -- transfer ----------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        # Pretrained weights come in when a fit starts: a checkpoint restored afterwards
        # (a resumed run) overrides them, and a model rebuilt from its own checkpoint
        # (load_from_checkpoint, test) never needs the pretraining run folder.
        if stage == "fit" and self.init_from and not self._encoders_loaded:
            self.load_pretrained_encoders()

    def load_pretrained_encoders(self) -> list[str]:
        """Copy the encoder weights of ``init_from``; the modalities loaded."""
        if not self.init_from:
            return []
        loaded = load_encoder_weights(self.encoders, self.init_from)
        self._encoders_loaded = True
        return loaded

    def train(self, mode: bool = True) -> Classify:
        super().train(mode)
        if getattr(self, "freeze_encoders", False):
            self.encoders.eval()  # frozen means frozen: batch-norm statistics, no dropout
        return self

    # -- model -------------------------------------------------------------------------------
    def encode(self, batch: dict[str, Tensor]) -> dict[str, EncoderOutput]:
        return encode(self.encoders, batch)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.classify(batch)[0]  # (B, num_classes)

    def classify(self, batch: dict[str, Tensor]) -> tuple[Tensor, FusionOutput | None]:
        """Logits ``(B, num_classes)`` and the fusion's output (None without a fusion)."""
        features, fused = encode_and_fuse(self.encoders, self.fusion, batch, self.modality_dropout)
        if fused is not None and fused.logits is not None:
            return fused.logits, fused
        if self.head is None:
            raise RuntimeError(f"{type(self.fusion).__name__} returned no logits to classify")
        return self.head(features), fused

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
        if stage == "test" and fused is not None:
            self._weights.update(fused.weights)
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
        if stage == "test":
            weights = self._weights.compute(self)
            if weights is not None:
                results["modality_weights"] = weights
        self.eval_results[stage] = results
        for key in ("accuracy", "f1_macro", "balanced_accuracy"):
            self.log(f"{stage}/{key}", results[key], prog_bar=key == "accuracy")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_start(self) -> None:
        self._weights.reset()

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

    # -- run folder --------------------------------------------------------------------------
    def write_artifacts(self, run_dir: str | Path) -> list[str]:
        """Modality attribution on the test split (two or more modalities); plot paths."""
        if len(self.encoders) < 2 or self.attribution_samples == 0:
            return []
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None:
            return []
        return self.write_attribution(run_dir, prepared_test_batches(self, dm))

    def write_attribution(
        self, run_dir: str | Path, batches: Any, max_samples: int | None = None
    ) -> list[str]:
        """Integrated-gradients shares per modality over prepared ``batches``, next to the
        fusion's test-set weights: ``attribution.json``, ``attribution.md`` and
        ``plots/attribution.png`` in ``run_dir``; returns the plot's relative path."""
        from longmm.evaluation.attribution import (
            attribution_section,
            modality_attributions,
            plot_attribution,
        )
        from longmm.io import atomic_write_json, atomic_write_text

        run = Path(run_dir)
        was_training = self.training
        self.eval()
        try:
            result = modality_attributions(
                self,
                batches,
                list(self.encoders),
                max_samples=max_samples or self.attribution_samples,
                n_steps=self.attribution_steps,
            )
        finally:
            self.train(was_training)
        if not result.shares:
            return []
        weights = self.eval_results.get("test", {}).get("modality_weights")
        plot = "plots/attribution.png"
        plot_attribution(result.shares, weights, run / plot)
        atomic_write_json(run / "attribution.json", {**result.to_dict(), "fusion_weights": weights})
        section = attribution_section(result, weights)
        atomic_write_text(run / "attribution.md", section)
        self.report_sections = [section]
        return [plot]


def prepared_test_batches(model: nn.Module, dm: Any) -> Any:
    """The data module's test batches as a step sees them: on the model's device, through
    the data module's batch hooks (normalization; augmentation stays off outside training)."""
    for batch in dm.test_dataloader():
        if hasattr(dm, "on_before_batch_transfer"):
            batch = dm.on_before_batch_transfer(batch, 0)
        batch = {k: v.to(model.device) if isinstance(v, Tensor) else v for k, v in batch.items()}
        if hasattr(dm, "on_after_batch_transfer"):
            batch = dm.on_after_batch_transfer(batch, 0)
        yield batch

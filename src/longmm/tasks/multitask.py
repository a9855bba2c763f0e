"""Multitask classification: shared encoders (and fusion), one head and loss per target."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longmm.errors import DataError
from longmm.evaluation.metrics import ClassificationMetrics
from longmm.fusion.dropout import ModalityDropout
from longmm.tasks.base import Task
from longmm.tasks.common import ModalityWeightMeans, bind_fusion, encode_and_fuse, fused_dim

Weighting = Literal["static", "uncertainty"]
RESERVED = ("accuracy", "f1_macro", "balanced_accuracy", "loss_weights", "modality_weights")


class MultiTask(Task):
    """Shared encoders per modality, an optional fusion (bound like ``Classify``'s), and a
    linear head per target: ``targets`` maps a batch key to its number of classes, e.g.
    ``{"label": 10, "speaker": 6}``. The first target is the main one: its accuracy is the
    top-level ``accuracy`` and the monitored ``val/accuracy``.

    Loss weighting:

    - ``static``: ``sum_t w_t * CE_t`` with ``weights`` (1.0 for a target not named);
    - ``uncertainty``: Kendall, Gal & Cipolla (2018), the classification form:
      ``sum_t exp(-s_t) * CE_t + s_t / 2`` with learned ``s_t = log sigma_t^2`` (starting at
      0): a target whose loss stays high (a hard or noisy one) gets a smaller weight.

    Every batch is checked: each target must be in it, with labels in ``[0, classes)``;
    otherwise a ``DataError`` names the target. Evaluation results hold, per target, the
    full ``ClassificationMetrics`` summary (``eval_results[stage][target]``), the main
    target's ``accuracy``, ``f1_macro`` and ``balanced_accuracy`` at the top level, the
    loss weights in use (``loss_weights``) and, on test, the fusion's mean modality weights.
    """

    monitor = "val/accuracy"
    monitor_mode = "max"

    def __init__(
        self,
        encoders: dict[str, nn.Module],
        targets: dict[str, int],
        fusion: nn.Module | None = None,
        weighting: Weighting = "static",
        weights: dict[str, float] | None = None,
        head_dropout: float = 0.0,
        label_smoothing: float = 0.0,
        modality_dropout: ModalityDropout | None = None,
        num_classes: int | None = None,
        **training: Any,
    ) -> None:
        super().__init__(**training)
        if not encoders:
            raise ValueError("MultiTask needs at least one encoder")
        if fusion is None and len(encoders) > 1:
            raise ValueError("several encoders need a fusion module")
        if modality_dropout is not None and fusion is None:
            raise ValueError("modality_dropout needs a fusion module (it masks modalities)")
        if getattr(fusion, "produces_logits", False):
            raise ValueError(
                f"{type(fusion).__name__} classifies by itself; MultiTask needs a fusion that "
                f"returns a fused vector for its heads"
            )
        targets = {str(t): int(n) for t, n in (targets or {}).items()}
        if not targets:
            raise ValueError("targets: give at least one target, e.g. {label: 10, speaker: 6}")
        for t, n in targets.items():
            if n < 2:
                raise ValueError(f"targets.{t}: needs at least 2 classes, got {n}")
            if t in RESERVED or "/" in t or "." in t:
                raise ValueError(f"targets: {t!r} cannot be a target name")
        if weighting not in ("static", "uncertainty"):
            raise ValueError(f"weighting must be 'static' or 'uncertainty', got {weighting!r}")
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(targets))
        if unknown:
            raise ValueError(f"weights: {unknown} are not targets ({list(targets)})")
        if weighting == "uncertainty" and weights:
            raise ValueError("weights are for weighting='static'; uncertainty learns them")
        if any(w < 0 for w in weights.values()):
            raise ValueError(f"weights must be >= 0, got {weights}")
        main = next(iter(targets))
        # The CLI links the data's number of classes (of ``label``) here, to check the recipe.
        if num_classes is not None and "label" in targets and num_classes != targets["label"]:
            raise ValueError(
                f"the data has {num_classes} label classes but targets.label says "
                f"{targets['label']}"
            )
        self.save_recipe_hyperparameters("encoders", "fusion", "modality_dropout")
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = fusion
        self.modality_dropout = modality_dropout
        bind_fusion(fusion, encoders, targets[main])
        dim = fused_dim(encoders, fusion)
        self.heads = nn.ModuleDict(
            {
                t: nn.Sequential(nn.Dropout(head_dropout), nn.Linear(dim, n))
                for t, n in targets.items()
            }
        )
        self.targets = targets
        self.main_target = main
        self.weighting = weighting
        self.static_weights = {t: float(weights.get(t, 1.0)) for t in targets}
        self.log_vars = (
            nn.Parameter(torch.zeros(len(targets))) if weighting == "uncertainty" else None
        )
        self.label_smoothing = label_smoothing
        self.eval_metrics = nn.ModuleDict({t: ClassificationMetrics(n) for t, n in targets.items()})
        self._weights = ModalityWeightMeans()

    def setup(self, stage: str) -> None:
        self.check_data(getattr(self.trainer, "datamodule", None))

    def check_data(self, dm: Any) -> None:
        """Compare ``targets`` with the class counts the data module states (``num_classes``
        for ``label``, ``num_<target>s`` such as ``num_speakers``, or ``target_classes``)."""
        if dm is None:
            return
        for t, n in self.targets.items():
            counts = getattr(dm, "target_classes", None) or {}
            found = len(counts[t]) if t in counts else None
            if found is None:
                attr = "num_classes" if t == "label" else f"num_{t}s"
                found = getattr(dm, attr, None)
            if isinstance(found, int) and found != n:
                raise DataError(
                    f"model.targets.{t}",
                    f"{n} classes, but the data has {found}; set targets.{t}: {found}",
                )

    # -- model -------------------------------------------------------------------------------
    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Logits per target: ``{target: (B, classes)}``."""
        return self.predict_all(batch)[0]

    def predict_all(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], Any]:
        features, fused = encode_and_fuse(self.encoders, self.fusion, batch, self.modality_dropout)
        return {t: head(features) for t, head in self.heads.items()}, fused

    def loss_weights(self) -> dict[str, float]:
        """The current multiplier of each target's loss."""
        if self.log_vars is None:
            return dict(self.static_weights)
        w = torch.exp(-self.log_vars.detach())
        return {t: round(float(w[i]), 6) for i, t in enumerate(self.targets)}

    def combine(self, losses: dict[str, Tensor]) -> Tensor:
        """The weighted total of the per-target losses."""
        if self.log_vars is None:
            return sum(self.static_weights[t] * losses[t] for t in self.targets)
        s = self.log_vars
        return sum(torch.exp(-s[i]) * losses[t] + 0.5 * s[i] for i, t in enumerate(self.targets))

    def labels(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Each target's labels, checked against its number of classes."""
        out = {}
        for t, n in self.targets.items():
            if t not in batch:
                keys = sorted(k for k, v in batch.items() if isinstance(v, Tensor))
                raise DataError(f"batch[{t!r}]", f"target {t!r} is missing (batch has {keys})")
            y = batch[t]
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n):
                raise DataError(
                    f"batch[{t!r}]",
                    f"labels {int(y.min())}..{int(y.max())} do not fit targets.{t} = {n} "
                    f"classes; set targets.{t} to the data's number of classes",
                )
            out[t] = y
        return out

    # -- steps -------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        labels = self.labels(batch)
        logits, _ = self.predict_all(batch)
        losses = {
            t: F.cross_entropy(logits[t], labels[t], label_smoothing=self.label_smoothing)
            for t in self.targets
        }
        loss = self.combine(losses)
        bs = len(labels[self.main_target])
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=bs)
        for t, value in losses.items():
            self.log(f"train/loss_{t}", value, on_step=False, on_epoch=True, batch_size=bs)
            accuracy = (logits[t].argmax(-1) == labels[t]).float().mean()
            self.log(f"train/accuracy_{t}", accuracy, on_step=False, on_epoch=True, batch_size=bs)
        if self.log_vars is not None:
            for t, w in self.loss_weights().items():
                self.log(f"train/weight_{t}", w, on_step=False, on_epoch=True, batch_size=bs)
        main = (logits[self.main_target].argmax(-1) == labels[self.main_target]).float().mean()
        self.log("train/accuracy", main, on_step=False, on_epoch=True, batch_size=bs)
        return loss

    def _eval_step(self, batch: dict[str, Tensor], stage: str) -> None:
        labels = self.labels(batch)
        logits, fused = self.predict_all(batch)
        if stage == "test" and fused is not None:
            self._weights.update(fused.weights)
        losses = {t: F.cross_entropy(logits[t], labels[t]) for t in self.targets}
        for t in self.targets:
            self.eval_metrics[t].update(logits[t], labels[t])
        bs = len(labels[self.main_target])
        loss = self.combine(losses)
        self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=stage == "val", batch_size=bs)
        for t, value in losses.items():
            self.log(f"{stage}/loss_{t}", value, on_epoch=True, batch_size=bs)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _eval_epoch_end(self, stage: str) -> None:
        results: dict[str, Any] = {}
        for t in self.targets:
            results[t] = self.eval_metrics[t].compute(self.class_names(t))
            self.eval_metrics[t].reset()
        main = results[self.main_target]
        top = {k: main[k] for k in ("accuracy", "f1_macro", "balanced_accuracy", "count")}
        out: dict[str, Any] = {**top, "main_target": self.main_target, **results}
        out["loss_weights"] = self.loss_weights()
        if stage == "test":
            weights = self._weights.compute(self)
            if weights is not None:
                out["modality_weights"] = weights
        self.eval_results[stage] = out
        self.log(f"{stage}/accuracy", main["accuracy"], prog_bar=True)
        for t in self.targets:
            self.log(f"{stage}/accuracy_{t}", results[t]["accuracy"])

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_start(self) -> None:
        self._weights.reset()

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        logits = self(batch)
        probs = torch.softmax(logits[self.main_target], dim=-1)
        conf, pred = probs.max(dim=-1)
        out: dict[str, Tensor] = {"pred": pred, "prob": conf, "probs": probs}
        for t in self.targets:
            out[f"pred_{t}"] = logits[t].argmax(-1)
        for key in ("index", "label"):
            if key in batch:
                out[key] = batch[key]
        return out

    def class_names(self, target: str) -> list[str] | None:
        """Names of a target's classes when the data module has them: ``classes`` for the
        main target, else ``target_classes[target]`` or a ``<target>s`` list (``speakers``)."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None:
            return None
        names: Any = None
        if target == self.main_target:
            names = getattr(dm, "classes", None)
        if names is None:
            names = (getattr(dm, "target_classes", None) or {}).get(target)
        if names is None:
            names = getattr(dm, f"{target}s", None)
        if isinstance(names, list | tuple) and len(names) == self.targets[target]:
            return [str(n) for n in names]
        return None

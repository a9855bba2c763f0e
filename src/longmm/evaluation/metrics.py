"""Classification metrics on torchmetrics, gathered into one plain dict."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)


class ClassificationMetrics(nn.Module):
    """Accumulates predictions over an evaluation pass; ``compute`` returns the summary:
    accuracy, macro and micro precision/recall/F1, balanced accuracy (the mean of per-class
    recalls), a per-class table, and the confusion matrix (rows: true, columns: predicted).
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        kw = {"num_classes": num_classes, "validate_args": False}
        self.accuracy = MulticlassAccuracy(average="micro", **kw)
        self.precision_macro = MulticlassPrecision(average="macro", **kw)
        self.recall_macro = MulticlassRecall(average="macro", **kw)
        self.f1_macro = MulticlassF1Score(average="macro", **kw)
        self.precision_micro = MulticlassPrecision(average="micro", **kw)
        self.recall_micro = MulticlassRecall(average="micro", **kw)
        self.f1_micro = MulticlassF1Score(average="micro", **kw)
        self.precision_per_class = MulticlassPrecision(average=None, **kw)
        self.recall_per_class = MulticlassRecall(average=None, **kw)
        self.f1_per_class = MulticlassF1Score(average=None, **kw)
        self.confusion = MulticlassConfusionMatrix(**kw)

    def _metrics(self) -> dict[str, nn.Module]:
        return {name: m for name, m in self.named_children()}

    def update(self, preds: Tensor, target: Tensor) -> None:
        """``preds``: class indices (B,) or scores (B, C); ``target``: class indices (B,)."""
        if preds.ndim == 2:
            preds = preds.argmax(dim=-1)
        for metric in self._metrics().values():
            metric.update(preds, target)

    def reset(self) -> None:
        for metric in self._metrics().values():
            metric.reset()

    @torch.no_grad()
    def compute(self, class_names: list[str] | None = None) -> dict[str, Any]:
        names = class_names or [str(i) for i in range(self.num_classes)]
        confusion = self.confusion.compute().long()
        support = confusion.sum(dim=1)
        present = support > 0
        recall = self.recall_per_class.compute()
        out: dict[str, Any] = {
            "accuracy": float(self.accuracy.compute()),
            "precision_macro": float(self.precision_macro.compute()),
            "recall_macro": float(self.recall_macro.compute()),
            "f1_macro": float(self.f1_macro.compute()),
            "precision_micro": float(self.precision_micro.compute()),
            "recall_micro": float(self.recall_micro.compute()),
            "f1_micro": float(self.f1_micro.compute()),
            # Classes absent from this split have no recall to average.
            "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
            "count": int(support.sum()),
        }
        precision, f1 = self.precision_per_class.compute(), self.f1_per_class.compute()
        out["per_class"] = {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(names)
        }
        out["confusion_matrix"] = confusion.tolist()
        return _tidy(out)


def _tidy(value: Any) -> Any:
    """Round floats to 6 places (float32 sums can land a hair above 1.0)."""
    if isinstance(value, float):
        return (
            round(min(max(value, 0.0), 1.0), 6) if 0.0 <= value <= 1.0 + 1e-5 else round(value, 6)
        )
    if isinstance(value, dict):
        return {k: _tidy(v) for k, v in value.items()}
    return value

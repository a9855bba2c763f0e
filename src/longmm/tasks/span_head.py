"""Training the span head (:class:`~longmm.reading.answer.span_head.SpanHead`) on
precomputed frozen features (:class:`~longmm.data.span_data.SpanData`;
``longmm fit --config recipes/span_head.yaml``), and writing span-head files from a run or a
checkpoint (the reader loads them with
:func:`~longmm.reading.answer.span_head.load_span_head`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from longmm.errors import DataError
from longmm.reading.answer.span_head import SpanHead, best_span
from longmm.tasks.base import Task
from longmm.tasks.common import SpanSteps


class SpanExtraction(SpanSteps, Task):
    """Trains a :class:`SpanHead` on precomputed frozen features (cross-entropy on the start
    and end tokens; [CLS] for "no answer"). Reports exact span match, no-answer accuracy and
    token F1; writes ``span_head.safetensors`` (weights + architecture) into the run folder."""

    monitor = "val/accuracy"
    monitor_mode = "max"

    def __init__(
        self,
        dim: int = 128,
        heads: int = 4,
        layers: int = 1,
        dropout: float = 0.1,
        max_answer_tokens: int = 24,
        lr: float = 2e-3,
        warmup_epochs: float = 0.5,
        **training: Any,
    ) -> None:
        super().__init__(lr=lr, warmup_epochs=warmup_epochs, **training)
        self.save_recipe_hyperparameters()
        self.architecture = {"dim": dim, "heads": heads, "layers": layers, "dropout": dropout}
        self.head = SpanHead(**self.architecture)
        self.max_answer_tokens = max_answer_tokens
        self._counts: dict[str, list[float]] = {}

    def logits(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        return self.head(batch["features"], batch["mask"], batch["type_ids"])

    def _eval_step(self, batch: dict[str, Tensor], stage: str) -> None:
        loss, start, end = self._loss(batch)
        sums = self._counts.setdefault(stage, [0.0] * 6)
        for b in range(len(start)):
            types, mask = batch["type_ids"][b], batch["mask"][b]
            at = int(torch.nonzero(types).min())
            n = int(mask.sum()) - at - 1
            i, j, margin = best_span(start[b], end[b], at, n, self.max_answer_tokens)
            gold = (int(batch["start"][b]), int(batch["end"][b]))
            pred = (at + i, at + j) if margin > 0 else (0, 0)
            sums[0] += 1
            sums[1] += float(pred == gold)
            if gold == (0, 0):
                sums[2] += 1
                sums[3] += float(pred == (0, 0))
            else:
                overlap = max(0, min(pred[1], gold[1]) - max(pred[0], gold[0]) + 1)
                if pred != (0, 0) and overlap:
                    p = overlap / (pred[1] - pred[0] + 1)
                    r = overlap / (gold[1] - gold[0] + 1)
                    sums[4] += 2 * p * r / (p + r)
                sums[5] += 1
        self.log(f"{stage}/loss", loss, batch_size=len(start))

    def _eval_end(self, stage: str) -> None:
        n, exact, nulls, null_ok, f1, answered = self._counts.pop(stage, [0.0] * 6)
        results = {
            "accuracy": round(exact / max(n, 1), 4),
            "no_answer_accuracy": round(null_ok / max(nulls, 1), 4),
            "answer_token_f1": round(f1 / max(answered, 1), 4),
            "examples": int(n),
        }
        self.eval_results[stage] = results
        for key in ("accuracy", "no_answer_accuracy", "answer_token_f1"):
            self.log(f"{stage}/{key}", float(results[key]), prog_bar=key == "accuracy")

    def write_artifacts(self, run: Path) -> list[str]:
        """``span_head.safetensors``: the head's weights with its architecture as metadata."""
        save_span_head(self.head, self.architecture, Path(run) / "span_head.safetensors")
        return []


def save_span_head(head: SpanHead, architecture: dict[str, Any], path: Path) -> None:
    from longmm.runs import save_weights

    meta = {"architecture": json.dumps(architecture), "encoder": "minilm"}
    save_weights(head.state_dict(), path, metadata=meta)


def export_span_head(checkpoint: str | Path, out: str | Path) -> Path:
    """The head of a :class:`SpanExtraction` checkpoint (``.ckpt``) as a span-head file."""
    from longmm.runs import read_checkpoint

    ckpt = read_checkpoint(checkpoint)
    hp = ckpt.get("hyper_parameters", {})
    architecture = {k: hp[k] for k in ("dim", "heads", "layers", "dropout") if k in hp}
    state = {k[5:]: v for k, v in ckpt["state_dict"].items() if k.startswith("head.")}
    if not state:
        raise DataError(str(checkpoint), "no span head weights (head.*) in this checkpoint")
    head = SpanHead(**architecture)
    head.load_state_dict(state)
    save_span_head(head, architecture, Path(out))
    return Path(out)

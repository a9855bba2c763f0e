"""The re-ranking task: a cross-encoder fine-tuned (LoRA) to score how well a passage answers
a question, trained with a listwise loss over each question's positive and hard negatives.

Each batch holds ``B`` questions with ``G`` candidates each (the positive first); the model
scores all ``B * G`` pairs and the loss is the cross-entropy of the softmax over each
question's candidates (the positive is the target), so every hard negative pushes against
the positive at once. Reported: MRR@10 and recall@1/3 of the positive, per source and over
all questions; the run folder gets ``reranker.safetensors`` (adapters + head, ~1.5 MB).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from longmm.evaluation.answers import reciprocal_rank
from longmm.models.adapted import adapt, base_model, lora_config, n_layers, save_adapter
from longmm.tasks.base import Task


class AdaptedTask(Task):
    """A Hugging Face model with a head, LoRA adapters on its top ``layers`` layers.

    ``dropout``: keep the pretrained model's own dropout in the adapted layers while training
    (off by default: the shipped re-ranker and answer model were trained without it, a short
    LoRA run on a CPU having little to fear from over-fitting)."""

    head_kind = "rerank"

    def __init__(
        self,
        model: str | None = None,
        rank: int = 32,
        alpha: float = 64.0,
        layers: int = 3,
        lr: float = 5e-4,
        warmup_epochs: float = 0.05,
        num_classes: int | None = None,
        dropout: bool = False,
        **training: Any,
    ) -> None:
        # ``num_classes``: unused (a ranking or a span has no classes); accepted because the
        # CLI links the data module's class count into every model's arguments.
        super().__init__(lr=lr, warmup_epochs=warmup_epochs, **training)
        self.base_path = model or "minilm"
        base = base_model(self.head_kind, model)  # type: ignore[arg-type]
        self.lora = lora_config(self.head_kind, rank, alpha, layers, n_layers(base))  # type: ignore[arg-type]
        self.net = adapt(base, self.lora)

        self.frozen_below = n_layers(base) - layers
        if not dropout:
            for module in self.net.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.p = 0.0
        # A Hugging Face model loads in eval mode and Lightning keeps the mode it finds.
        self.train()

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            # The frozen layers below the adapters keep their dropout off: fixed features.
            from longmm.encoders.pretrained import transformer_layers

            for layer in list(transformer_layers(self.net))[: self.frozen_below]:
                layer.eval()
            for name, module in self.net.named_modules():
                if name.endswith(".embeddings"):
                    module.eval()
        return self

    def save_adapter(self, path: Path, meta: dict[str, Any]) -> Path:
        meta = {**meta, "base": self.base_path}  # the model folder the adapters fit
        return save_adapter(self.net, self.head_kind, self.lora, path, meta)  # type: ignore[arg-type]


class Rerank(AdaptedTask):
    """Cross-encoder re-ranker (see the module docstring)."""

    monitor = "val/mrr10"
    monitor_mode = "max"
    head_kind = "rerank"

    def __init__(self, temperature: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.save_recipe_hyperparameters()
        self.temperature = temperature
        self._ranks: dict[str, list[tuple[str, int]]] = {}
        self._sources: list[str] = []

    def scores(self, batch: dict[str, Tensor]) -> Tensor:
        """``(B, G)`` relevance scores; missing candidates get ``-inf``."""
        logits = self.net(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
        ).logits.squeeze(-1)
        real = batch["candidates"]
        scores = logits.view(real.shape)
        return scores.masked_fill(~real, float("-inf"))

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        scores = self.scores(batch) / self.temperature
        target = torch.zeros(len(scores), dtype=torch.long, device=scores.device)
        loss = F.cross_entropy(scores, target)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(scores))
        return loss

    def _eval_step(self, batch: dict[str, Tensor], stage: str) -> None:
        scores = self.scores(batch)
        target = torch.zeros(len(scores), dtype=torch.long, device=scores.device)
        self.log(f"{stage}/loss", F.cross_entropy(scores, target), batch_size=len(scores))
        # rank of the positive: 1 + candidates scored above it (ties count against it)
        ranks = 1 + (scores[:, 1:] >= scores[:, :1]).sum(1)
        sources = batch.get("sources")
        for i, r in enumerate(ranks.tolist()):
            src = sources[i] if sources is not None else "all"
            self._ranks.setdefault(stage, []).append((src, int(r)))

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _eval_end(self, stage: str) -> None:
        rows = self._ranks.pop(stage, [])
        if not rows:
            return
        results = ranking_metrics([r for _, r in rows])
        by_source: dict[str, list[int]] = {}
        for src, r in rows:
            by_source.setdefault(src, []).append(r)
        if len(by_source) > 1:
            results["by_source"] = {s: ranking_metrics(rs) for s, rs in sorted(by_source.items())}
        self.eval_results[stage] = results
        for key in ("mrr10", "recall1", "recall3"):
            self.log(f"{stage}/{key}", float(results[key]), prog_bar=key == "mrr10")

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")

    def write_artifacts(self, run: Path) -> list[str]:
        """``reranker.safetensors``: the adapters and head, loadable by the reader."""
        self.save_adapter(Path(run) / "reranker.safetensors", {})
        return []


def ranking_metrics(ranks: list[int]) -> dict[str, Any]:
    n = max(len(ranks), 1)
    return {
        "mrr10": round(sum(reciprocal_rank(r, 10) for r in ranks) / n, 4),
        "recall1": round(sum(r <= 1 for r in ranks) / n, 4),
        "recall3": round(sum(r <= 3 for r in ranks) / n, 4),
        "queries": len(ranks),
    }

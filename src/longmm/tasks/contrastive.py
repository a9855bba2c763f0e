"""Self-supervised contrastive pretraining between two modalities, and cross-modal retrieval.

The encoders live under ``encoders.<modality>.`` as in ``Classify``, so a classifier starts
from them with ``Classify(init_from=<this run>)`` (a linear probe with ``freeze_encoders``,
fine-tuning without).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longmm.errors import DataError
from longmm.tasks.base import Task
from longmm.tasks.common import encode


def info_nce(a: Tensor, b: Tensor, scale: Tensor | float) -> Tensor:
    """Symmetric InfoNCE (CLIP's loss): ``a (B, D)`` and ``b (B, D)`` are L2-normalized
    embeddings where row ``i`` of each is the same pair; ``scale`` is the inverse temperature.
    The mean of the a->b and b->a cross-entropies over the in-batch candidates."""
    logits = scale * a @ b.t()  # (B, B): row i = sample i of a against every b
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def retrieval_ranks(queries: Tensor, keys: Tensor, chunk: int = 1024) -> Tensor:
    """For each query ``i`` the 0-based rank of its own key ``i`` among all keys by cosine
    similarity (``queries``, ``keys``: ``(N, D)``, normalized). Ties count against the
    query (a key scoring the same as the positive is ranked ahead of it)."""
    ranks = []
    for start in range(0, len(queries), chunk):
        q = queries[start : start + chunk]
        sim = q @ keys.t()  # (chunk, N)
        idx = torch.arange(start, start + len(q), device=q.device)
        pos = sim.gather(1, idx[:, None])
        ranks.append((sim >= pos).sum(dim=1) - 1)
    return torch.cat(ranks) if ranks else queries.new_zeros(0, dtype=torch.long)


def recall_at_k(ranks: Tensor, ks: list[int]) -> dict[str, float]:
    """``{"r@k": share of queries whose positive is in the top k}`` from 0-based ranks."""
    n = max(len(ranks), 1)
    return {f"r@{k}": round(float((ranks < k).sum()) / n, 6) for k in ks}


def class_recall_at_k(
    queries: Tensor, keys: Tensor, labels: Tensor, ks: list[int], chunk: int = 1024
) -> dict[str, float]:
    """``{"class_r@k": share of queries with a key of their own class in the top k}``: the
    category-level view (any clip of the same digit counts)."""
    top = max(ks)
    hits = {k: 0 for k in ks}
    for start in range(0, len(queries), chunk):
        q = queries[start : start + chunk]
        idx = (q @ keys.t()).topk(min(top, len(keys)), dim=1).indices  # (chunk, top)
        same = labels[idx] == labels[start : start + len(q), None]
        for k in ks:
            hits[k] += int(same[:, :k].any(dim=1).sum())
    n = max(len(queries), 1)
    return {f"class_r@{k}": round(hits[k] / n, 6) for k in ks}


class Contrastive(Task):
    """Two modalities' encoders, a projection head each (linear, or an MLP with
    ``proj_hidden``) to ``proj_dim``, L2-normalized, trained with symmetric InfoNCE over the
    in-batch pairs at a temperature that is learned (``learn_temperature``) as a log scale,
    kept within ``[min_temperature, max_temperature]``.

    A pair is the i-th sample of a batch: its ``modalities[0]`` input and its
    ``modalities[1]`` input; every other sample's is a negative. Samples missing either
    modality (an all-False mask row) are left out of the loss and the retrieval.

    Validation and test rank, over the whole split, every sample's paired item among all the
    split's items of the other modality (pair identity, not class): ``r@k`` for each
    direction (``<a>_to_<b>``, ``<b>_to_<a>``), the mean of both at the top level (``r@1``
    is the monitored ``val/r@1``), the median rank, and, when batches carry ``label``, the
    class-level ``class_r@k`` (a retrieved item of the same class counts).

    ``monitor`` picks the checkpoint: ``val/r@1`` by default; ``val/loss`` (the InfoNCE loss,
    minimized; label-free) where pair-identity recall is bounded near chance, as when pairs
    only share a class; also ``val/r@5``, ``val/r@10``, ``val/class_r@1``.
    """

    monitor = "val/r@1"
    monitor_mode = "max"

    def __init__(
        self,
        encoders: dict[str, nn.Module],
        modalities: list[str] | None = None,
        proj_dim: int = 128,
        proj_hidden: int | None = None,
        temperature: float = 0.07,
        learn_temperature: bool = True,
        min_temperature: float = 0.01,
        max_temperature: float = 1.0,
        ks: list[int] | None = None,
        monitor: str = "val/r@1",
        **training: Any,
    ) -> None:
        super().__init__(**training)
        mods = list(modalities or list(encoders)[:2])
        if len(mods) != 2 or mods[0] == mods[1]:
            raise ValueError(f"modalities: give two different modalities, got {mods}")
        missing = [m for m in mods if m not in encoders]
        if missing:
            raise ValueError(f"modalities {missing} have no encoder (encoders: {list(encoders)})")
        if not 0 < min_temperature <= temperature <= max_temperature:
            raise ValueError(
                f"need 0 < min_temperature <= temperature <= max_temperature, got "
                f"{min_temperature}, {temperature}, {max_temperature}"
            )
        ks = sorted({int(k) for k in (ks or [1, 5, 10])})
        if ks[0] < 1:
            raise ValueError(f"ks must be >= 1, got {ks}")
        self.save_recipe_hyperparameters("encoders")
        self.modalities = mods
        self.encoders = nn.ModuleDict({m: encoders[m] for m in mods})
        self.projections = nn.ModuleDict(
            {m: _projection(self.encoders[m].dim, proj_dim, proj_hidden) for m in mods}
        )
        # log(1 / temperature), the CLIP parameterization: the scale stays positive and the
        # optimizer moves it multiplicatively.
        self.log_scale = nn.Parameter(
            torch.tensor(math.log(1.0 / temperature)), requires_grad=learn_temperature
        )
        self.log_scale_range = (math.log(1.0 / max_temperature), math.log(1.0 / min_temperature))
        self.ks = ks
        if not monitor.startswith("val/"):
            raise ValueError(f"monitor must be a validation metric 'val/...', got {monitor!r}")
        self.monitor = monitor
        self.monitor_mode = "min" if monitor.endswith(("loss", "median_rank")) else "max"
        self._store: dict[str, list[Tensor]] = {}

    # -- model -------------------------------------------------------------------------------
    @property
    def scale(self) -> Tensor:
        lo, hi = self.log_scale_range
        return self.log_scale.clamp(lo, hi).exp()

    @property
    def temperature(self) -> float:
        return float(1.0 / self.scale.detach())

    def embed(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Normalized embeddings ``(B, proj_dim)`` of both modalities and ``(B,)`` True where
        the sample has both."""
        missing = [m for m in self.modalities if m not in batch]
        if missing:
            keys = sorted(k for k, v in batch.items() if isinstance(v, Tensor))
            raise DataError("batch", f"modalities {missing} are missing (batch has {keys})")
        outputs = encode(self.encoders, batch)
        z = [F.normalize(self.projections[m](outputs[m].pooled), dim=-1) for m in self.modalities]
        both = outputs[self.modalities[0]].mask.any(1) & outputs[self.modalities[1]].mask.any(1)
        return z[0], z[1], both

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        a, b, _ = self.embed(batch)
        return {self.modalities[0]: a, self.modalities[1]: b}

    # -- steps -------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        a, b, both = self.embed(batch)
        a, b = a[both], b[both]
        loss = info_nce(a, b, self.scale)
        bs = len(a)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=bs)
        self.log("train/temperature", self.temperature, on_step=False, on_epoch=True)
        with torch.no_grad():
            hits = ((a @ b.t()).argmax(dim=1) == torch.arange(bs, device=a.device)).float()
        self.log("train/batch_r@1", hits.mean(), on_step=False, on_epoch=True, batch_size=bs)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Keep the parameter itself in range (CLIP clips it), so its gradient never dies
        # at a clamp boundary.
        with torch.no_grad():
            self.log_scale.clamp_(*self.log_scale_range)

    def _eval_step(self, batch: dict[str, Tensor], stage: str) -> None:
        a, b, both = self.embed(batch)
        a, b = a[both], b[both]
        if len(a):
            loss = info_nce(a, b, self.scale)
            self.log(
                f"{stage}/loss", loss, on_epoch=True, prog_bar=stage == "val", batch_size=len(a)
            )
        self._store.setdefault("a", []).append(a.detach().float())
        self._store.setdefault("b", []).append(b.detach().float())
        if "label" in batch:
            self._store.setdefault("label", []).append(batch["label"][both].detach())

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_validation_epoch_start(self) -> None:
        self._store = {}

    def on_test_epoch_start(self) -> None:
        self._store = {}

    def _gathered(self, key: str) -> Tensor | None:
        parts = self._store.get(key)
        if not parts:
            return None
        x = torch.cat(parts)
        if self._trainer is not None and self.trainer.world_size > 1:
            x = self.all_gather(x).flatten(0, 1)  # (world * n, ...); equal shards per rank
        return x

    def _eval_epoch_end(self, stage: str) -> None:
        a, b = self._gathered("a"), self._gathered("b")
        labels = self._gathered("label")
        labels = labels if labels is not None and a is not None and len(labels) == len(a) else None
        self._store = {}
        if a is None or len(a) == 0:
            return
        first, second = self.modalities
        results: dict[str, Any] = {"count": len(a), "temperature": round(self.temperature, 6)}
        per_direction = {}
        for name, q, k in ((f"{first}_to_{second}", a, b), (f"{second}_to_{first}", b, a)):
            ranks = retrieval_ranks(q, k)
            row: dict[str, float] = recall_at_k(ranks, self.ks)
            row["median_rank"] = float(ranks.float().median()) + 1.0  # 1-based
            if labels is not None:
                row.update(class_recall_at_k(q, k, labels, self.ks))
            per_direction[name] = row
        for key in per_direction[f"{first}_to_{second}"]:
            values = [row[key] for row in per_direction.values()]
            results[key] = round(sum(values) / len(values), 6)
        results.update(per_direction)
        self.eval_results[stage] = results
        keys = [f"r@{k}" for k in self.ks] + ["median_rank"]
        keys += [f"class_r@{k}" for k in self.ks] if labels is not None else []
        for key in keys:
            self.log(f"{stage}/{key}", results[key], prog_bar=key == "r@1")
        self.log(f"{stage}/{first}_to_{second}_r@1", per_direction[f"{first}_to_{second}"]["r@1"])

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        out = self(batch)
        if "index" in batch:
            out["index"] = batch["index"]
        return out


def _projection(dim: int, out: int, hidden: int | None) -> nn.Module:
    if hidden:
        return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, out))
    return nn.Linear(dim, out)

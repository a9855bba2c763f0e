"""Judging generated images with an independent classifier (its features, confident share,
coverage, FID), and image grids."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image
from torch import Tensor, nn
from torchmetrics import Metric

from longmm.errors import LongmmError
from longmm.io import atomic_path


# -- the judge -------------------------------------------------------------------------------
class JudgeFeatures(nn.Module):
    """A trained classifier seen as a feature extractor for images in [-1, 1].

    ``forward`` returns the judge's penultimate features ``(B, D)`` (the input of its linear
    head), which is what torchmetrics' FID takes from a custom ``feature`` module; it reads
    ``num_features`` instead of probing the module with a dummy image. ``probabilities``
    returns the judge's class probabilities ``(B, classes)``. The module never leaves eval mode.
    """

    def __init__(self, judge: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        linear = judge.head[-1]
        if not isinstance(linear, nn.Linear):
            raise LongmmError("judge: expected a classifier whose head ends in nn.Linear")
        self.judge = judge
        self.num_features = linear.in_features
        self.num_classes = linear.out_features
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32)[None, :, None, None])
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32)[None, :, None, None])
        self._captured: Tensor | None = None
        judge.head.register_forward_hook(self._capture)
        self.eval()
        self.requires_grad_(False)

    def train(self, mode: bool = True) -> JudgeFeatures:
        return super().train(False)

    def _capture(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        self._captured = inputs[0]

    def _run(self, images: Tensor) -> tuple[Tensor, Tensor]:
        # Generator space [-1, 1] -> [0, 1] -> the judge's own normalization.
        x = ((images.float() + 1.0) / 2.0 - self.mean) / self.std
        logits = self.judge({"image": x})
        features, self._captured = self._captured, None
        return features, logits

    def forward(self, images: Tensor) -> Tensor:
        return self._run(images)[0]  # (B, num_features)

    def probabilities(self, images: Tensor) -> Tensor:
        return torch.softmax(self._run(images)[1].float(), dim=-1)  # (B, num_classes)


def load_judge(run_dir: str | Path) -> tuple[JudgeFeatures, dict[str, Any]]:
    """The classifier of a ``longmm fit`` run folder, with that run's image normalization.

    Returns the judge and the run's ``data.json`` preprocessing (classes, image size, ...).
    """
    from longmm.tasks.classify import Classify

    run = Path(run_dir)
    ckpt = run / "checkpoints" / "best.ckpt"
    data_json = run / "data.json"
    for path in (run, ckpt, data_json):
        if not path.exists():
            raise LongmmError(
                f"judge {run}: {path} not found; train the judge classifier first, e.g. "
                f"longmm fit --config recipes/cnn_mnist.yaml --data.root ../shared/data/mnist "
                f"--model.init_args.label_smoothing 0 --out {run}"
            )
    try:
        prep = json.loads(data_json.read_text())["preprocessing"]
        mean, std = prep["mean"], prep["std"]
    except (ValueError, KeyError) as err:
        raise LongmmError(f"{data_json}: no preprocessing mean/std ({err})") from err
    from longmm.runs import read_checkpoint

    read_checkpoint(ckpt)  # a clear error for a truncated or corrupt file
    classifier = Classify.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    smoothing = float(getattr(classifier, "label_smoothing", 0.0) or 0.0)
    if smoothing > 0:
        # With smoothing e over K classes the loss is lowest at p = 1 - e + e/K, so confident
        # real images hover near the 0.9 threshold and the confident share reads low.
        rank_zero_warn(
            f"judge {run} was trained with label_smoothing={smoothing}: its probabilities are "
            f"capped near {1 - smoothing + smoothing / classifier.num_classes:.3f}, so the "
            "confident share under-counts; train the judge with label_smoothing 0"
        )
    return JudgeFeatures(classifier, mean, std), prep


class JudgedSamples(Metric):
    """What the judge says about a set of images: predicted-class counts, confident share,
    agreement with requested labels. Sums, so it adds up over batches and devices."""

    full_state_update = False

    def __init__(self, num_classes: int, confidence: float = 0.9, num_codes: int = 0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.confidence = confidence
        self.num_codes = num_codes
        # Judged classes per InfoGAN code: (num_codes, num_classes); empty without codes.
        self.add_state("by_code", torch.zeros(num_codes, num_classes, dtype=torch.float64), "sum")
        self.add_state("counts", torch.zeros(num_classes, dtype=torch.float64), "sum")
        self.add_state("confident", torch.zeros((), dtype=torch.float64), "sum")
        self.add_state("agree", torch.zeros((), dtype=torch.float64), "sum")
        self.add_state("labelled", torch.zeros((), dtype=torch.float64), "sum")
        self.add_state("total", torch.zeros((), dtype=torch.float64), "sum")

    def update(
        self, probs: Tensor, labels: Tensor | None = None, codes: Tensor | None = None
    ) -> None:
        conf, pred = probs.max(dim=-1)
        self.counts += torch.bincount(pred, minlength=self.num_classes).to(self.counts)
        self.confident += (conf >= self.confidence).sum()
        self.total += len(pred)
        if labels is not None:
            self.agree += (pred == labels).sum()
            self.labelled += len(labels)
        if codes is not None:
            if not self.num_codes:
                raise ValueError("JudgedSamples: codes given, but it was made with num_codes=0")
            flat = codes.to(pred.device) * self.num_classes + pred
            cells = self.num_codes * self.num_classes
            counts = torch.bincount(flat, minlength=cells).reshape(self.by_code.shape)
            self.by_code += counts.to(self.by_code)

    def compute(self) -> dict[str, Any]:
        total = self.total.clamp_min(1)
        share = self.counts / total
        entropy = -(share * share.clamp_min(1e-12).log()).sum()
        out: dict[str, Any] = {
            "confident_share": float(self.confident / total),
            "coverage": float(entropy / math.log(self.num_classes)),
            "class_share": [round(float(s), 4) for s in share],
        }
        if self.labelled > 0:
            out["label_agreement"] = float(self.agree / self.labelled)
        if self.by_code.numel() and self.by_code.sum() > 0:
            top, cls = self.by_code.max(dim=1)
            out["code_purity"] = float(top.sum() / self.by_code.sum())
            out["code_classes"] = [int(c) for c in cls]
        return out


# -- image grids -----------------------------------------------------------------------------
def image_grid(images: Tensor, nrow: int = 8, padding: int = 2, scale: int = 1) -> Image.Image:
    """Images ``(N, C, H, W)`` in [-1, 1] as one PIL image, ``nrow`` images per row."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    n, c, h, w = x.shape
    cols = max(1, min(nrow, n))
    rows = math.ceil(n / cols)
    grid = torch.full((c, rows * (h + padding) + padding, cols * (w + padding) + padding), 96)
    grid = grid.to(torch.uint8)
    for i in range(n):
        top = padding + (i // cols) * (h + padding)
        left = padding + (i % cols) * (w + padding)
        grid[:, top : top + h, left : left + w] = x[i]
    array = grid.permute(1, 2, 0).numpy()
    image = Image.fromarray(array[:, :, 0] if c == 1 else array, mode="L" if c == 1 else "RGB")
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    return image


def save_image_grid(images: Tensor, path: str | Path, nrow: int = 8, scale: int = 1) -> Path:
    """Write a grid PNG atomically (temporary name, then rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        image_grid(images, nrow=nrow, scale=scale).save(tmp, format="PNG")
    return path


def grid_scale(image_size: int) -> int:
    """Upscaling that makes small images visible: 8x8 digits x8, 28x28 MNIST x2."""
    return max(1, 64 // image_size)


# -- the task --------------------------------------------------------------------------------

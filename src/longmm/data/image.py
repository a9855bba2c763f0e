"""Image preprocessing and augmentation.

Images travel as ``uint8`` tensors ``(C, H, W)`` until the batch is on its device; there they
become floats, are normalized with statistics of the training split, and (in training only)
augmented with kornia.
"""

from __future__ import annotations

from typing import Literal

import kornia.augmentation as K
import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from longmm.errors import DataError


def to_chw_uint8(array: np.ndarray, *, channels: int, size: int | None, where: str = "") -> Tensor:
    """Convert an ``(H, W, C)`` / ``(H, W)`` uint8 array to ``(channels, size, size)`` uint8."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.dtype != np.uint8:
        raise DataError(
            where or "image", f"expected a uint8 (H, W, C) array, got {array.dtype} {array.shape}"
        )
    have = array.shape[2]
    if have != channels:
        mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(have)
        if mode is None:
            raise DataError(where or "image", f"cannot convert {have} channels to {channels}")
        target = "L" if channels == 1 else "RGB"
        if channels not in (1, 3):
            raise DataError(where or "image", f"unsupported channel count {channels}")
        image = Image.fromarray(array[:, :, 0] if have == 1 else array, mode=mode).convert(target)
        array = np.asarray(image)
        if array.ndim == 2:
            array = array[:, :, None]
    if size is not None and array.shape[:2] != (size, size):
        mode = "L" if channels == 1 else "RGB"
        image = Image.fromarray(array[:, :, 0] if channels == 1 else array, mode=mode)
        array = np.asarray(image.resize((size, size), Image.Resampling.BILINEAR))
        if array.ndim == 2:
            array = array[:, :, None]
    return (
        torch.from_numpy(np.array(array, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()
    )


NormalizeMode = Literal["standard", "symmetric"]


class ImageNormalizer(nn.Module):
    """Per-channel mean/std, applied on the batch's device.

    ``standard``: mean and std fitted on the training split only. ``symmetric``: mean = std
    = 0.5, so pixels map to [-1, 1] (what a ``tanh`` generator produces).
    """

    def __init__(self, channels: int = 1, mode: NormalizeMode = "standard") -> None:
        super().__init__()
        if mode not in ("standard", "symmetric"):
            raise ValueError(f"normalize must be 'standard' or 'symmetric', got {mode!r}")
        self.mode = mode
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))

    @torch.no_grad()
    def fit(self, images: Tensor) -> ImageNormalizer:
        """``images``: uint8 ``(N, C, H, W)`` from the training split."""
        if self.mode == "symmetric":
            self.mean.fill_(0.5)
            self.std.fill_(0.5)
            return self
        x = images.float().div_(255.0)
        self.mean.copy_(x.mean(dim=(0, 2, 3)))
        self.std.copy_(x.std(dim=(0, 2, 3)).clamp_min(1e-6))
        return self

    def forward(self, images: Tensor) -> Tensor:
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images
        return (x - self.mean[None, :, None, None]) / self.std[None, :, None, None]


class ImageAugment(nn.Module):
    """Kornia augmentation on normalized float batches; the identity outside training."""

    def __init__(
        self,
        degrees: float = 0.0,
        translate: float = 0.0,
        scale: float = 0.0,
        hflip: bool = False,
        erase_p: float = 0.0,
        noise_std: float = 0.0,
        p: float = 1.0,
    ) -> None:
        super().__init__()
        steps: list[nn.Module] = []
        if degrees or translate or scale:
            steps.append(
                K.RandomAffine(
                    degrees=degrees,
                    translate=(translate, translate) if translate else None,
                    scale=(1.0 - scale, 1.0 + scale) if scale else None,
                    p=p,
                )
            )
        if hflip:
            steps.append(K.RandomHorizontalFlip(p=0.5))
        if erase_p:
            steps.append(K.RandomErasing(p=erase_p, scale=(0.02, 0.15)))
        if noise_std:
            steps.append(K.RandomGaussianNoise(std=noise_std, p=p))
        self.steps = nn.Sequential(*steps)

    def forward(self, images: Tensor) -> Tensor:
        if not self.training or len(self.steps) == 0:
            return images
        return self.steps(images)

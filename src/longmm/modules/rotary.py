"""Rotary position embedding (RoFormer) for sequences of any length.

The angles are computed on the fly for the positions at hand instead of from a table (a
table for 1M positions would hold 128 MB per head size), and in float64: at position 10^6
the fastest channel turns 10^6 radians, and float32 would round that by up to 0.06 rad.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class RotaryEmbedding(nn.Module):
    """Rotates the first ``rot_dim`` channels of each head by ``position * theta_i``.

    Channels ``(i, i + rot_dim/2)`` form the rotated pairs; the channels after ``rot_dim`` are
    left as they are (partial rotary, as in GPT-NeoX), so a head can also match on content
    alone. The score of two rotated tokens depends on their offset only.
    """

    def __init__(self, rot_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if rot_dim <= 0 or rot_dim % 2:
            raise ValueError(f"rotary channels must be a positive even number, got {rot_dim}")
        self.rot_dim = rot_dim
        exponents = torch.arange(0, rot_dim, 2, dtype=torch.float64) / rot_dim
        self.register_buffer("inv_freq", 1.0 / base**exponents, persistent=False)

    def angles(self, start: int, length: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """``cos, sin`` of shape ``(length, 1, rot_dim / 2)`` for positions ``start ..``."""
        device = self.inv_freq.device
        pos = torch.arange(start, start + length, dtype=torch.float64, device=device)
        theta = pos[:, None] * self.inv_freq[None]  # (L, rot/2)
        return theta.cos().to(dtype)[:, None], theta.sin().to(dtype)[:, None]

    def forward(self, x: Tensor, start: int = 0, out: Tensor | None = None) -> Tensor:
        """``x`` ``(B, L, H, dh)`` at positions ``start .. start + L - 1`` (or ``(B, *, H, dh)``
        with the positions over the middle dimensions, e.g. ``(B, blocks, block, H, dh)``);
        written into ``out`` (same shape) when given, without temporaries."""
        length = math.prod(x.shape[1:-2])
        cos, sin = (t.view(*x.shape[1:-2], 1, -1) for t in self.angles(start, length, x.dtype))
        half, rot = self.rot_dim // 2, self.rot_dim
        a, b = x[..., :half], x[..., half:rot]
        if out is None:
            turned = [a * cos - b * sin, a * sin + b * cos]
            if rot < x.shape[-1]:
                turned.append(x[..., rot:])
            return torch.cat(turned, dim=-1)
        torch.mul(a, cos, out=out[..., :half]).addcmul_(b, sin, value=-1)
        torch.mul(a, sin, out=out[..., half:rot]).addcmul_(b, cos)
        out[..., rot:] = x[..., rot:]
        return out

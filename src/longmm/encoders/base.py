"""The one contract every encoder meets."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class EncoderOutput:
    tokens: Tensor  # (B, N, D) per-position features
    mask: Tensor  # (B, N) bool, True where a token is real
    pooled: Tensor  # (B, D) one vector per sample

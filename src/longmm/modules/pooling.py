"""Pooling of token sequences over their real positions (the ``EncoderOutput`` mask)."""

from __future__ import annotations

import torch
from torch import Tensor


def masked_mean(tokens: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``tokens (B, N, D)`` over positions where ``mask (B, N)`` is True; 0 where a
    sample has no real token. Padded values are never read (they may be anything)."""
    real = mask.unsqueeze(-1)
    total = torch.where(real, tokens, torch.zeros_like(tokens)).sum(dim=1)
    return total / mask.sum(dim=1, keepdim=True).clamp_min(1).to(tokens.dtype)


def masked_max(tokens: Tensor, mask: Tensor) -> Tensor:
    """Element-wise max of ``tokens (B, N, D)`` over real positions; 0 where a sample has no
    real token (instead of -inf)."""
    real = mask.unsqueeze(-1)
    low = torch.finfo(tokens.dtype).min
    best = torch.where(real, tokens, torch.full_like(tokens, low)).amax(dim=1)
    return torch.where(mask.any(dim=1, keepdim=True), best, torch.zeros_like(best))

"""Modality dropout: drop whole modalities per sample during training, by masking."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from longmm.encoders.base import EncoderOutput


class ModalityDropout(nn.Module):
    """In training, drops each modality of each sample with probability ``p`` by setting that
    sample's ``mask`` row to all False (the fusion then treats it as absent; its values are
    left as they are, never zeroed). At least ``min_keep`` of the modalities a sample has are
    kept (all of them if it has fewer); with several to choose from, the survivors are picked
    at random. In eval mode the inputs pass through unchanged.
    """

    def __init__(self, p: float = 0.2, min_keep: int = 1) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        if min_keep < 0:
            raise ValueError(f"min_keep must be >= 0, got {min_keep}")
        self.p = p
        self.min_keep = min_keep

    def forward(self, inputs: dict[str, EncoderOutput]) -> dict[str, EncoderOutput]:
        if not self.training or self.p == 0.0 or not inputs:
            return inputs
        names = list(inputs)
        present = torch.stack([inputs[m].mask.to(torch.bool).any(dim=1) for m in names], dim=1)
        u = torch.rand(present.shape, device=present.device)  # (B, M)
        keep = present & (u >= self.p)
        need = min(self.min_keep, len(names))
        if need > 0:
            # The `need` present modalities with the highest draws always stay; when enough
            # survive anyway they are among the survivors, so this only tops up.
            ranked = u.masked_fill(~present, -1.0)
            top = ranked.topk(need, dim=1).indices
            forced = torch.zeros_like(keep).scatter_(1, top, True) & present
            keep = keep | forced
        return {
            m: replace(inputs[m], mask=inputs[m].mask.to(torch.bool) & keep[:, i : i + 1])
            for i, m in enumerate(names)
        }

    def extra_repr(self) -> str:
        return f"p={self.p}, min_keep={self.min_keep}"

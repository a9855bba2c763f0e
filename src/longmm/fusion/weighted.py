"""Attention-weighted fusion: a per-sample score for each modality, softmax over present ones."""

from __future__ import annotations

import torch
from torch import nn

from longmm.encoders.base import EncoderOutput
from longmm.fusion.base import Fusion, FusionOutput, blank_absent, masked_softmax, present_or


class WeightedFusion(Fusion):
    """Projects each pooled vector to ``out_dim`` (linear + layer norm), scores it with a
    shared additive-attention scorer (linear, tanh, linear to 1), and mixes the projections
    by the softmax of the scores over the modalities present in that sample.

    ``weights`` are those mixing weights: in [0, 1], summing to 1 over present modalities,
    0 for absent ones. A sample with only one modality gets that modality's projection.
    """

    def build(self) -> None:
        self.proj = nn.ModuleDict(
            {
                m: nn.Sequential(nn.Linear(d, self.out_dim), nn.LayerNorm(self.out_dim))
                for m, d in self.dims.items()
            }
        )
        self.score = nn.Sequential(
            nn.Linear(self.out_dim, self.out_dim), nn.Tanh(), nn.Linear(self.out_dim, 1)
        )
        self.drop = nn.Dropout(self.dropout)

    def forward(self, inputs: dict[str, EncoderOutput]) -> FusionOutput:
        present = self.presence(inputs)  # (B, M)
        ref = next(iter(inputs.values())).pooled
        zero = ref.new_zeros(())
        hs, scores = [], []
        for i, m in enumerate(self.dims):
            if m in inputs:
                pooled = blank_absent(inputs[m].pooled, present[:, i])
                h = present_or(self.proj[m](pooled), present[:, i], zero)
            else:
                h = ref.new_zeros(len(present), self.out_dim)
            hs.append(h)
            scores.append(self.score(h).squeeze(-1))
        h = torch.stack(hs, dim=1)  # (B, M, out_dim)
        weights = masked_softmax(torch.stack(scores, dim=1), present)  # (B, M)
        fused = (weights.unsqueeze(-1).to(h.dtype) * h).sum(dim=1)
        return FusionOutput(fused=self.drop(fused), weights=self.weights_dict(weights))

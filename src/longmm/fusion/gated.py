"""Gated multimodal unit (GMU) fusion."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from longmm.encoders.base import EncoderOutput
from longmm.fusion.base import Fusion, FusionOutput, present_or


class GatedFusion(Fusion):
    """GMU (Arevalo et al., 2017) for any number of modalities: ``h_m = tanh(W_m x_m)``, and
    gates ``z = softmax_m(W_z [x_1; ...; x_M; flags])`` per output dimension, over the
    modalities present in the sample (with two modalities this is the GMU's sigmoid gate);
    ``fused = sum_m z_m * h_m``, then dropout.

    In the gate's input an absent modality is a learned "missing" embedding and a 0 flag.
    ``weights`` are the gates averaged over dimensions: 0 for absent modalities, summing to 1.
    """

    def build(self) -> None:
        self.hidden = nn.ModuleDict({m: nn.Linear(d, self.out_dim) for m, d in self.dims.items()})
        self.missing = nn.ParameterDict(
            {m: nn.Parameter(torch.randn(d) * 0.02) for m, d in self.dims.items()}
        )
        width = sum(self.dims.values()) + len(self.dims)
        self.gate = nn.Linear(width, len(self.dims) * self.out_dim)
        self.drop = nn.Dropout(self.dropout)

    def forward(self, inputs: dict[str, EncoderOutput]) -> FusionOutput:
        present = self.presence(inputs)  # (B, M)
        b, n = present.shape
        xs: list[Tensor] = []
        for i, m in enumerate(self.dims):
            miss = self.missing[m]
            xs.append(
                present_or(inputs[m].pooled, present[:, i], miss)
                if m in inputs
                else miss.expand(b, -1)
            )
        hidden = torch.stack(
            [torch.tanh(self.hidden[m](x)) for m, x in zip(self.dims, xs, strict=True)], dim=1
        )  # (B, M, out_dim)
        gate_in = torch.cat([*xs, present.to(xs[0].dtype)], dim=-1)
        logits = self.gate(gate_in).view(b, n, self.out_dim)
        mask = present.unsqueeze(-1)  # (B, M, 1)
        logits = logits.masked_fill(~mask, float("-inf"))
        logits = torch.where(present.any(1)[:, None, None], logits, torch.zeros_like(logits))
        z = torch.softmax(logits, dim=1)
        z = torch.where(mask, z, torch.zeros_like(z))  # (B, M, out_dim)
        fused = (z * hidden).sum(dim=1)
        return FusionOutput(fused=self.drop(fused), weights=self.weights_dict(z.mean(dim=-1)))

"""Early fusion: the pooled vectors side by side, with a presence flag per modality."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from longmm.encoders.base import EncoderOutput
from longmm.fusion.base import Fusion, FusionOutput, present_or


class ConcatFusion(Fusion):
    """Concatenates each modality's pooled vector and a presence flag (1 present, 0 absent),
    then a linear layer, GELU and dropout to ``out_dim``.

    An absent modality's vector is replaced by a learned "missing" embedding of its own, so
    the network tells "absent" from "a vector of zeros"; with the flag it can also learn an
    offset for it.
    """

    def build(self) -> None:
        self.missing = nn.ParameterDict(
            {m: nn.Parameter(torch.randn(d) * 0.02) for m, d in self.dims.items()}
        )
        width = sum(self.dims.values()) + len(self.dims)
        self.mlp = nn.Sequential(
            nn.Linear(width, self.out_dim), nn.GELU(), nn.Dropout(self.dropout)
        )

    def forward(self, inputs: dict[str, EncoderOutput]) -> FusionOutput:
        present = self.presence(inputs)  # (B, M)
        parts: list[Tensor] = []
        for i, m in enumerate(self.dims):
            miss = self.missing[m]
            vec = (
                present_or(inputs[m].pooled, present[:, i], miss)
                if m in inputs
                else miss.expand(len(present), -1)
            )
            parts += [vec, present[:, i : i + 1].to(vec.dtype)]
        return FusionOutput(fused=self.mlp(torch.cat(parts, dim=-1)))

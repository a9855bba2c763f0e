"""Low-rank multimodal (tensor) fusion, LMF-style."""

from __future__ import annotations

import torch
from torch import nn

from longmm.encoders.base import EncoderOutput
from longmm.fusion.base import Fusion, FusionOutput, present_or


class TensorFusion(Fusion):
    """Low-rank Multimodal Fusion (Liu et al., 2018): each modality's vector with a 1 appended,
    ``z_m = [x_m; 1]``, is mapped by ``rank`` factors to ``out_dim``; the factors multiply
    elementwise across modalities (the outer product of the ``z_m`` contracted with a rank-
    ``rank`` weight tensor, never built), and a learned mix over the rank plus a bias gives
    the fused vector. The appended 1 keeps the unimodal and bimodal terms of the full tensor.

    An absent modality's ``x_m`` is a learned "missing" embedding (its 1 stays), so the
    product is defined and the network knows the modality is absent.
    """

    def __init__(self, out_dim: int = 128, rank: int = 4, dropout: float = 0.1) -> None:
        super().__init__(out_dim=out_dim, dropout=dropout)
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.rank = rank

    def build(self) -> None:
        self.missing = nn.ParameterDict(
            {m: nn.Parameter(torch.randn(d) * 0.02) for m, d in self.dims.items()}
        )
        self.factors = nn.ParameterDict()
        for m, d in self.dims.items():
            factor = torch.empty(self.rank, d + 1, self.out_dim)
            nn.init.xavier_normal_(factor)
            self.factors[m] = nn.Parameter(factor)
        self.rank_weights = nn.Parameter(torch.full((self.rank,), 1.0 / self.rank))
        self.bias = nn.Parameter(torch.zeros(self.out_dim))
        self.drop = nn.Dropout(self.dropout)

    def forward(self, inputs: dict[str, EncoderOutput]) -> FusionOutput:
        present = self.presence(inputs)  # (B, M)
        b = present.shape[0]  # not len(): the ONNX tracer keeps shape[0] dynamic
        product = None
        for i, m in enumerate(self.dims):
            miss = self.missing[m]
            x = (
                present_or(inputs[m].pooled, present[:, i], miss)
                if m in inputs
                else miss.expand(b, -1)
            )
            z = torch.cat([x, x.new_ones(b, 1)], dim=-1)  # (B, d + 1)
            f = torch.einsum("bi,rio->bro", z, self.factors[m])  # (B, rank, out_dim)
            product = f if product is None else product * f
        assert product is not None
        fused = torch.einsum("r,bro->bo", self.rank_weights, product) + self.bias
        return FusionOutput(fused=self.drop(fused))

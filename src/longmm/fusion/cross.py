"""Cross-modal Transformer fusion: each modality's tokens attend to the other modalities'."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from longmm.encoders.base import EncoderOutput
from longmm.fusion.base import Fusion, FusionOutput, masked_mean


class _CrossBlock(nn.Module):
    """Pre-LN cross-attention (queries: one modality; keys: the others) and a feed-forward."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, context: Tensor | None, context_mask: Tensor | None) -> Tensor:
        """``x (B, N, D)``; ``context (B, K, D)`` with ``context_mask (B, K)`` True on real
        keys. A sample without any real key gets no attention update (not a NaN)."""
        if context is not None and context_mask is not None:
            has_keys = context_mask.any(dim=1)  # (B,)
            padding = ~context_mask & has_keys[:, None]
            kv = self.norm_kv(context)
            a, _ = self.attn(self.norm_q(x), kv, kv, key_padding_mask=padding, need_weights=False)
            x = x + torch.where(has_keys[:, None, None], self.drop(a), torch.zeros_like(a))
        return x + self.drop(self.ff(self.norm_ff(x)))


class CrossModalFusion(Fusion):
    """Cross-modal Transformer (MulT-style): tokens are projected to ``out_dim`` and tagged
    with a learned modality embedding; in each of ``layers`` rounds every modality's tokens
    attend to the real tokens of the other modalities present in the sample (key padding
    masks), then a feed-forward. Each modality is mean-pooled over its real tokens and the
    pooled vectors are averaged over the present modalities; a linear layer, GELU and dropout
    give ``fused``.

    A modality alone in a sample (the others absent) only goes through the feed-forwards.
    """

    def __init__(
        self, out_dim: int = 128, heads: int = 4, layers: int = 1, dropout: float = 0.1
    ) -> None:
        super().__init__(out_dim=out_dim, dropout=dropout)
        if out_dim % heads:
            raise ValueError(f"out_dim={out_dim} must be divisible by heads={heads}")
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        self.heads = heads
        self.layers = layers

    def build(self) -> None:
        d = self.out_dim
        self.proj = nn.ModuleDict({m: nn.Linear(w, d) for m, w in self.token_dims.items()})
        self.modality_embedding = nn.Parameter(torch.randn(len(self.dims), d) * 0.02)
        self.blocks = nn.ModuleList(
            nn.ModuleDict({m: _CrossBlock(d, self.heads, self.dropout) for m in self.dims})
            for _ in range(self.layers)
        )
        self.norm = nn.LayerNorm(d)
        self.out = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Dropout(self.dropout))

    def forward(self, inputs: dict[str, EncoderOutput]) -> FusionOutput:
        present = self.presence(inputs, tokens=True)  # (B, M)
        index = {m: i for i, m in enumerate(self.dims)}
        mods = [m for m in self.dims if m in inputs]
        masks = {m: inputs[m].mask.to(torch.bool) & present[:, index[m], None] for m in mods}
        x = {
            m: self.proj[m](inputs[m].tokens.masked_fill(~masks[m].unsqueeze(-1), 0.0))
            + self.modality_embedding[index[m]]
            for m in mods
        }
        for block in self.blocks:
            new = {}
            for m in mods:
                others = [o for o in mods if o != m]
                context = torch.cat([x[o] for o in others], dim=1) if others else None
                context_mask = torch.cat([masks[o] for o in others], dim=1) if others else None
                new[m] = block[m](x[m], context, context_mask)
            x = new
        pooled = torch.stack(
            [masked_mean(self.norm(x[m]), masks[m]) for m in mods], dim=1
        )  # (B, M', D)
        here = torch.stack([present[:, index[m]] for m in mods], dim=1)  # (B, M')
        mean = (pooled * here.unsqueeze(-1)).sum(dim=1) / here.sum(1, keepdim=True).clamp_min(1)
        return FusionOutput(fused=self.out(mean))

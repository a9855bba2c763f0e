"""Graph fusion: modality nodes and token-segment nodes, with attention message passing."""

from __future__ import annotations

import importlib.util
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longmm.encoders.base import EncoderOutput
from longmm.fusion.base import Fusion, FusionOutput, blank_absent

Backend = Literal["auto", "pyg", "torch"]


def pyg_available() -> bool:
    return importlib.util.find_spec("torch_geometric") is not None


class GraphAttention(nn.Module):
    """Graph Transformer convolution in plain PyTorch, the same computation and parameter
    names as PyTorch Geometric's ``TransformerConv(dim, dim // heads, heads)`` (concatenated
    heads, root weight, no edge features): for each node ``i``,
    ``out_i = W_skip x_i + sum_j softmax_j(q_i . k_j / sqrt(c)) v_j`` over its in-edges.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.channels = dim // heads
        self.lin_key = nn.Linear(dim, dim)
        self.lin_query = nn.Linear(dim, dim)
        self.lin_value = nn.Linear(dim, dim)
        self.lin_skip = nn.Linear(dim, dim)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        n, h, c = len(x), self.heads, self.channels
        src, dst = edge_index  # messages flow src -> dst
        q = self.lin_query(x).view(n, h, c)[dst]
        k = self.lin_key(x).view(n, h, c)[src]
        v = self.lin_value(x).view(n, h, c)[src]
        score = (q * k).sum(dim=-1) / math.sqrt(c)  # (E, H)
        # Softmax over each destination's in-edges.
        top = score.new_full((n, h), float("-inf"))
        top = top.scatter_reduce(0, dst[:, None].expand(-1, h), score, "amax")
        e = (score - top[dst]).exp()
        total = e.new_zeros(n, h).index_add_(0, dst, e)
        alpha = e / total[dst]
        out = x.new_zeros(n, h, c).index_add_(0, dst, v * alpha.unsqueeze(-1))
        return out.view(n, h * c) + self.lin_skip(x)


def _conv(dim: int, heads: int, backend: str) -> nn.Module:
    if backend == "pyg":
        from torch_geometric.nn import TransformerConv

        return TransformerConv(dim, dim // heads, heads=heads)
    return GraphAttention(dim, heads)


class _Round(nn.Module):
    """One round of message passing, pre-LN with residuals, then a feed-forward."""

    def __init__(self, dim: int, heads: int, dropout: float, backend: str) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.conv = _conv(dim, heads, backend)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(
            nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        x = x + self.drop(self.conv(self.norm(x), edge_index))
        return x + self.drop(self.ff(self.norm_ff(x)))


def segment_means(tokens: Tensor, mask: Tensor, segments: int) -> tuple[Tensor, Tensor]:
    """Split each sample's real tokens, in order, into ``min(segments, real)`` contiguous
    runs of near-equal length and average each: ``(B, segments, D)`` and a ``(B, segments)``
    mask of the runs that exist. Padded positions are neither read nor counted."""
    real = mask.sum(dim=1, keepdim=True)  # (B, 1)
    rank = mask.long().cumsum(dim=1) - 1  # position among the real tokens
    used = real.clamp(max=segments)
    seg = (rank.clamp_min(0) * used) // real.clamp_min(1)  # (B, N) in [0, used)
    onehot = F.one_hot(seg, segments).to(tokens.dtype) * mask.unsqueeze(-1)  # (B, N, S)
    values = tokens.masked_fill(~mask.unsqueeze(-1), 0.0)
    counts = onehot.sum(dim=1)  # (B, S)
    means = torch.einsum("bns,bnd->bsd", onehot, values) / counts.clamp_min(1).unsqueeze(-1)
    return means, counts > 0


class GraphFusion(Fusion):
    """A graph per sample: one node per present modality (from its pooled vector) and up to
    ``segments`` segment nodes per modality (the means of contiguous runs of its real tokens).
    Edges, both ways: modality - its segments, segment - next segment, modality - modality.
    ``rounds`` of graph-Transformer message passing (PyTorch Geometric's ``TransformerConv``
    with ``backend="pyg"``, an identical plain-PyTorch layer with ``"torch"``; ``"auto"``
    takes PyG when it is installed; both have the same parameters, so checkpoints move between
    them). The modality nodes are averaged, then a linear layer, GELU and dropout.

    Absent modalities and padded tokens have no node, so they cannot send messages.
    """

    def __init__(
        self,
        out_dim: int = 128,
        heads: int = 4,
        rounds: int = 2,
        segments: int = 4,
        dropout: float = 0.1,
        backend: Backend = "auto",
    ) -> None:
        super().__init__(out_dim=out_dim, dropout=dropout)
        if out_dim % heads:
            raise ValueError(f"out_dim={out_dim} must be divisible by heads={heads}")
        if rounds < 1 or segments < 1:
            raise ValueError(f"rounds and segments must be >= 1, got {rounds}, {segments}")
        if backend not in ("auto", "pyg", "torch"):
            raise ValueError(f"backend must be 'auto', 'pyg' or 'torch', got {backend!r}")
        if backend == "pyg" and not pyg_available():
            raise ImportError("GraphFusion(backend='pyg') needs torch_geometric installed")
        self.heads = heads
        self.rounds = rounds
        self.segments = segments
        self.backend = backend
        self.backend_used = (
            "pyg" if backend == "pyg" or (backend == "auto" and pyg_available()) else "torch"
        )

    def build(self) -> None:
        d, s, m = self.out_dim, self.segments, len(self.dims)
        self.node_proj = nn.ModuleDict({k: nn.Linear(w, d) for k, w in self.dims.items()})
        self.token_proj = nn.ModuleDict({k: nn.Linear(w, d) for k, w in self.token_dims.items()})
        self.modality_embedding = nn.Parameter(torch.randn(m, d) * 0.02)
        self.slot_embedding = nn.Parameter(torch.randn(1 + s, d) * 0.02)  # node, segments
        self.layers = nn.ModuleList(
            _Round(d, self.heads, self.dropout, self.backend_used) for _ in range(self.rounds)
        )
        self.norm = nn.LayerNorm(d)
        self.out = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Dropout(self.dropout))
        self.register_buffer("template", self._template(m, s), persistent=False)

    @staticmethod
    def _template(m: int, s: int) -> Tensor:
        """Edges ``(2, E)`` of one sample's full graph; node ``(i, k)`` is ``i * (1 + s) + k``,
        ``k = 0`` the modality node of modality ``i``, ``k >= 1`` its segments."""
        k = 1 + s
        pairs: list[tuple[int, int]] = []
        for i in range(m):
            node = i * k
            for j in range(1, k):
                pairs += [(node, node + j), (node + j, node)]
                if j + 1 < k:
                    pairs += [(node + j, node + j + 1), (node + j + 1, node + j)]
            pairs += [(node, o * k) for o in range(m) if o != i]
        if not pairs:
            return torch.zeros(2, 0, dtype=torch.long)
        return torch.tensor(pairs, dtype=torch.long).t().contiguous()

    def forward(self, inputs: dict[str, EncoderOutput]) -> FusionOutput:
        present = self.presence(inputs, tokens=True)  # (B, M)
        b, m = present.shape
        s, d = self.segments, self.out_dim
        ref = next(iter(inputs.values())).pooled
        nodes, valid = [], []
        for i, name in enumerate(self.dims):
            if name in inputs:
                out = inputs[name]
                here = present[:, i]
                pooled = blank_absent(out.pooled, here)
                mask = out.mask.to(torch.bool) & here.unsqueeze(-1)
                seg, seg_valid = segment_means(
                    self.token_proj[name](out.tokens.masked_fill(~mask.unsqueeze(-1), 0.0)), mask, s
                )
                nodes.append(torch.cat([self.node_proj[name](pooled).unsqueeze(1), seg], dim=1))
                valid.append(torch.cat([here.unsqueeze(1), seg_valid], dim=1))
            else:
                nodes.append(ref.new_zeros(b, 1 + s, d))
                valid.append(present.new_zeros(b, 1 + s))
        x = torch.stack(nodes, dim=1)  # (B, M, 1 + S, D)
        x = x + self.modality_embedding[None, :, None] + self.slot_embedding[None, None]
        ok = torch.stack(valid, dim=1).reshape(-1)  # (B * M * (1 + S),)
        per_sample = m * (1 + s)
        offsets = torch.arange(b, device=ref.device) * per_sample
        edges = (self.template.unsqueeze(1) + offsets[None, :, None]).reshape(2, -1)
        edges = edges[:, ok[edges[0]] & ok[edges[1]]]
        # Keep only the real nodes, renumbered.
        new_id = ok.long().cumsum(0) - 1
        h = x.reshape(-1, d)[ok]
        edges = new_id[edges]
        for layer in self.layers:
            h = layer(h, edges)
        full = x.new_zeros(b * per_sample, d).index_put((ok.nonzero().squeeze(1),), h)
        modality_nodes = self.norm(full.view(b, m, 1 + s, d)[:, :, 0])  # (B, M, D)
        weights = present.to(h.dtype)
        mean = (modality_nodes * weights.unsqueeze(-1)).sum(1) / weights.sum(1, True).clamp_min(1)
        return FusionOutput(fused=self.out(mean))

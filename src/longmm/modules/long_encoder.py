"""A long-sequence Transformer encoder: sliding-window attention, global tokens, rotary
positions, memory linear in length (see :mod:`longmm.modules.attention` for the pattern).

Global tokens (a question's tokens) attend to everything and everything attends to them, so
they carry the question to every block and the document back to the question. They take no
rotary positions (their order comes from a learned embedding added at the input), and their
queries and keys are zero on the rotated channels: a local token meets a global one on the
unrotated channels only, by content, at whatever position it stands. That keeps the
local-global scores independent of the position, which is what lets a model trained on 4K
tokens read 1M.

**Long inputs at inference.** Without gradients, a layer runs in two passes over segments of
``segment_blocks`` blocks: first the keys and values of the whole sequence (which the global
queries and the neighbouring blocks need), then per segment the queries, the windowed
attention, the projection and the feed-forward network, written back into the residual
stream in place. Peak memory is then about the residual stream plus the keys and values
(3 x N x dim floats) whatever the length; 1M tokens at dim 256 take about 3.5 GB.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longmm.modules.attention import (
    ATTENTION_IMPLS,
    frame_bias,
    framed_global_attention,
    framed_window_attention,
    global_attention,
    local_attention,
    make_frames,
)
from longmm.modules.rotary import RotaryEmbedding


@dataclass
class LongEncoderOutput:
    tokens: Tensor  # (B, N, D) local tokens (the padding added to whole blocks removed)
    mask: Tensor  # (B, N) True on real tokens
    global_tokens: Tensor  # (B, G, D)
    global_mask: Tensor  # (B, G)


def _all_real(mask: Tensor | None) -> bool:
    return mask is None or bool(mask.all())


class LongEncoderLayer(nn.Module):
    """Pre-norm Transformer layer over local and global tokens (shared weights)."""

    def __init__(
        self, dim: int, heads: int, ff_dim: int, rot_dim: int, block: int, dropout: float
    ) -> None:
        super().__init__()
        self.dim, self.heads, self.head_dim, self.block = dim, heads, dim // heads, block
        self.rot_dim = rot_dim
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff_dim), nn.GELU(), nn.Linear(ff_dim, dim))
        self.rotary = RotaryEmbedding(rot_dim)
        self.drop = nn.Dropout(dropout)  # on the residual branches; never inside attention

    def _heads(self, x: Tensor) -> Tensor:
        return x.view(*x.shape[:2], self.heads, self.head_dim)  # (B, L, H, dh)

    def _global_qkv(self, g: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v = (self._heads(t) for t in self.qkv(self.norm1(g)).chunk(3, dim=-1))
        # Zero on the rotated channels: global tokens meet the others by content only.
        keep = torch.ones(self.head_dim, dtype=q.dtype, device=g.device)
        keep[: self.rot_dim] = 0
        return q * keep, k * keep, v

    def _finish_global(self, g: Tensor, attn: Tensor) -> Tensor:
        g = g + self.drop(self.out(attn.reshape(*g.shape)))
        return g + self.drop(self.ff(self.norm2(g)))

    def forward(
        self,
        x: Tensor,
        g: Tensor,
        key_mask: Tensor | None,
        impl: str = "blocked",
        segment_blocks: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``x`` ``(B, N, D)`` local (N a multiple of ``block``), ``g`` ``(B, G, D)`` global,
        ``key_mask`` ``(B, G + N)`` or None. Without gradients on CPU, the blocked
        implementation takes the framed inference path and updates ``x`` in place."""
        if impl == "blocked" and not torch.is_grad_enabled() and x.device.type == "cpu":
            blocks = segment_blocks or x.shape[1] // self.block
            return self._forward_framed(x, g, key_mask, blocks)
        gq, gk, gv = self._global_qkv(g)
        q, k, v = (self._heads(t) for t in self.qkv(self.norm1(x)).chunk(3, dim=-1))
        q, k = self.rotary(q), self.rotary(k)
        k_all, v_all = torch.cat([gk, k], dim=1), torch.cat([gv, v], dim=1)
        attn = local_attention(impl, q, k_all, v_all, key_mask, g.shape[1], self.block)
        x = x + self.drop(self.out(attn.reshape(*x.shape)))
        x = x + self.drop(self.ff(self.norm2(x)))
        return x, self._finish_global(g, global_attention(gq, k_all, v_all, key_mask))

    @torch.no_grad()
    def _forward_framed(
        self, x: Tensor, g: Tensor, key_mask: Tensor | None, segment_blocks: int
    ) -> tuple[Tensor, Tensor]:
        """Inference in two passes over segments of blocks (see the module docstring), with
        the keys and values in frames (:func:`~longmm.modules.attention.make_frames`)."""
        b, n, d = x.shape
        n_global, block = g.shape[1], self.block
        seg = min(segment_blocks * block, n)
        gq, gk, gv = self._global_qkv(g)
        # Frames take the dtype the projections give (bfloat16 under autocast: half the
        # memory traffic; the flash kernel accumulates its softmax in float32 anyway).
        frames_k = make_frames(n, n_global, block, gk)
        frames_v = torch.empty_like(frames_k)
        frames_k[:, :, :n_global], frames_v[:, :, :n_global] = gk[:, None], gv[:, None]
        w_q, w_kv = self.qkv.weight[:d], self.qkv.weight[d:]
        b_q, b_kv = self.qkv.bias[:d], self.qkv.bias[d:]
        for start in range(0, n, seg):  # pass 1: keys and values of every token, in frames
            kv = F.linear(self.norm1(x[:, start : start + seg]), w_kv, b_kv)
            k, v = (self._heads(t) for t in kv.chunk(2, dim=-1))
            blocks = slice(start // block, (start + k.shape[1]) // block)
            frames = (b, -1, block, self.heads, self.head_dim)
            self.rotary(k.view(frames), start, out=frames_k[:, blocks, n_global:])
            frames_v[:, blocks, n_global:] = v.view(frames)
        bias = frame_bias(key_mask, n_global, block, gk.dtype)
        g_attn = framed_global_attention(gq, frames_k, frames_v, bias, n_global)
        for start in range(0, n, seg):  # pass 2: queries, attention, feed-forward, in place
            part = x[:, start : start + seg]
            q = self.rotary(self._heads(F.linear(self.norm1(part), w_q, b_q)), start)
            attn = framed_window_attention(
                q, frames_k, frames_v, bias, n_global, block, start // block
            )
            part += self.out(attn.reshape(*part.shape))
            part += self.ff(self.norm2(part))
        del frames_k, frames_v
        return x, self._finish_global(g, g_attn.to(g.dtype))


class LongEncoder(nn.Module):
    """Embeds token ids (or takes embeddings) and runs :class:`LongEncoderLayer` s.

    ``forward(tokens, mask, global_tokens, global_mask)``: ``tokens`` ``(B, N)`` ids of the
    document, ``global_tokens`` ``(B, G)`` ids of the question (optional). Any ``N`` works:
    the document is padded to whole blocks inside and the padding removed from the output.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int = 256,
        layers: int = 4,
        heads: int = 4,
        ff_mult: int = 4,
        block: int = 256,
        rotary_fraction: float = 0.5,
        max_global: int = 128,
        dropout: float = 0.0,
        attention: str = "blocked",
        segment_blocks: int = 64,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not a multiple of heads {heads}")
        if attention not in ATTENTION_IMPLS:
            raise ValueError(f"attention must be one of {ATTENTION_IMPLS}, got {attention!r}")
        head_dim = dim // heads
        rot_dim = max(2, int(head_dim * rotary_fraction) // 2 * 2)
        self.dim, self.block, self.max_global = dim, block, max_global
        self.attention, self.segment_blocks = attention, segment_blocks
        self.embed = nn.Embedding(vocab_size, dim)
        self.global_pos = nn.Embedding(max_global, dim)
        self.layers = nn.ModuleList(
            LongEncoderLayer(dim, heads, ff_mult * dim, rot_dim, block, dropout)
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(
        self,
        tokens: Tensor,
        mask: Tensor | None = None,
        global_tokens: Tensor | None = None,
        global_mask: Tensor | None = None,
        attention: str | None = None,
    ) -> LongEncoderOutput:
        g = None if global_tokens is None else self.embed(global_tokens)
        return self.forward_embeddings(self.embed(tokens), mask, g, global_mask, attention)

    def forward_embeddings(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        g: Tensor | None = None,
        global_mask: Tensor | None = None,
        attention: str | None = None,
    ) -> LongEncoderOutput:
        """Same as :meth:`forward` from embeddings ``x`` ``(B, N, D)`` and ``g`` ``(B, G, D)``
        (for inputs that mix modalities). ``x`` may be updated in place at inference."""
        impl = attention or self.attention
        if impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention must be one of {ATTENTION_IMPLS}, got {impl!r}")
        b, n, _ = x.shape
        if n == 0:
            raise ValueError("the document has no tokens")
        if g is None:
            g = x.new_zeros(b, 0, self.dim)
        if g.shape[1] > self.max_global:
            raise ValueError(f"{g.shape[1]} global tokens; this encoder takes {self.max_global}")
        g = g + self.global_pos.weight[: g.shape[1]]
        real = torch.ones(b, n, dtype=torch.bool, device=x.device) if mask is None else mask
        greal = torch.ones(b, g.shape[1], dtype=torch.bool, device=x.device)
        greal = greal if global_mask is None else global_mask
        pad = -n % self.block
        if pad:
            x = F.pad(x, (0, 0, 0, pad))
        key_mask = torch.cat([greal, F.pad(real, (0, pad))], dim=1)
        key_mask = None if bool(key_mask.all()) else key_mask
        for layer in self.layers:
            x, g = layer(x, g, key_mask, impl, self.segment_blocks)
            if key_mask is not None:  # keep padded positions finite (a query with no key)
                x = torch.where(key_mask[:, g.shape[1] :, None], x, 0.0)
                g = torch.where(key_mask[:, : g.shape[1], None], g, 0.0)
        return LongEncoderOutput(self.norm(x[:, :n]), real, self.norm(g), greal)

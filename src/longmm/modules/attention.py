"""Sliding-window attention with global tokens, in three interchangeable implementations.

**The pattern.** A sequence holds ``G`` global tokens (a question, say) and ``N`` local tokens
(the document), ``N`` a multiple of ``block``. The local tokens are cut into blocks of
``block`` tokens; block ``i`` attends to a window of three consecutive blocks, itself and its
neighbours (``i-1, i, i+1``; at the two ends the window slides inwards to stay three blocks
wide, so no block has a padded neighbour), and to every global token. Global tokens attend to
every token. Keys marked False in ``key_mask`` are never attended. So a local token sees
between ``block`` and ``2 * block`` tokens on each side, and memory is linear in ``N``.

**Layout.** Queries, keys and values are ``(B, L, H, dh)`` (the layout a linear layer writes;
heads are split by a view, not a copy). Keys and values of a layer are one tensor
``(B, G + N, H, dh)``: the ``G`` global tokens first, then the local ones.

**Implementations** (:data:`ATTENTION_IMPLS`), equal up to float rounding (tested):

* ``"blocked"``: the training path and the long-input path. Each block's queries meet the
  keys of their window (gathered into ``(B * blocks, H, 3 * block + G, dh)``) in one call of
  PyTorch's ``scaled_dot_product_attention``, restricted to the flash kernel (the fused
  efficient kernel on GPUs): memory stays linear. A key-padding mask is passed only when a
  key is padded; in torch 2.13 the CPU flash kernel takes such a broadcast mask, and
  :func:`_fused_sdpa` makes a fallback to the quadratic math kernel an error, not a slowdown.
* ``"flex"``: FlexAttention with a :class:`BlockMask` built directly from the window rule
  (no dense mask is ever made), compiled with ``torch.compile``; inference only (on CPU
  FlexAttention has no backward).
* ``"dense"``: a reference that writes the full ``(N, G + N)`` boolean mask; small inputs only.

Global queries are a separate small attention over all ``G + N`` keys in every implementation
(one SDPA call, flash kernel, linear memory).
"""

from __future__ import annotations

import functools
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

AttentionImpl = Literal["blocked", "flex", "dense"]
ATTENTION_IMPLS: tuple[str, ...] = ("blocked", "flex", "dense")
WINDOW_BLOCKS = 3
# The fused kernels; never the math kernel, which materializes the (L, S) score matrix.
_FUSED = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]


def window_starts(num_blocks: int, device: torch.device | None = None) -> Tensor:
    """First block of each block's window: ``i - 1`` clamped so that the window of
    ``min(3, num_blocks)`` blocks stays inside the sequence. ``(num_blocks,)`` int64."""
    last = max(num_blocks - WINDOW_BLOCKS, 0)
    return (torch.arange(num_blocks, device=device) - 1).clamp(0, last)


def _fused_sdpa(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float) -> Tensor:
    """SDPA on ``(B, H, L, dh)`` inputs with the fused kernels only (no dropout)."""
    with sdpa_kernel(_FUSED):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def blocked_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_mask: Tensor | None,
    n_global: int,
    block: int,
    first_block: int = 0,
    scale: float | None = None,
) -> Tensor:
    """Local queries ``q`` ``(B, S, H, dh)`` of blocks ``first_block .. + S / block`` against
    their windows and the global keys of ``k, v`` ``(B, G + N, H, dh)``. Returns
    ``(B, S, H, dh)``. ``key_mask`` ``(B, G + N)`` is True on real keys (None: all real)."""
    b, s, h, dh = q.shape
    n = k.shape[1] - n_global
    nb, ns = n // block, s // block
    scale = dh**-0.5 if scale is None else scale
    width = min(WINDOW_BLOCKS, nb)
    starts = window_starts(nb, q.device)[first_block : first_block + ns]
    idx = starts[:, None] + torch.arange(width, device=q.device)  # (ns, width)

    def windows(x: Tensor) -> Tensor:  # (B, G + N, H, dh) -> (B * ns, H, K, dh)
        local = x[:, n_global:].view(b, nb, block, h, dh)[:, idx]  # (B, ns, width, block, H, dh)
        local = local.reshape(b, ns, width * block, h, dh)
        if n_global:
            glob = x[:, None, :n_global].expand(b, ns, n_global, h, dh)
            local = torch.cat([local, glob], dim=2)
        return local.view(b * ns, -1, h, dh).transpose(1, 2)

    mask = None
    if key_mask is not None:
        local_mask = key_mask[:, n_global:].view(b, nb, block)[:, idx].reshape(b, ns, -1)
        glob_mask = key_mask[:, None, :n_global].expand(b, ns, n_global)
        mask = torch.cat([local_mask, glob_mask], dim=2).view(b * ns, 1, 1, -1)
    qb = q.reshape(b * ns, block, h, dh).transpose(1, 2)  # (B * ns, H, block, dh)
    out = _fused_sdpa(qb, windows(k), windows(v), mask, scale)
    return out.transpose(1, 2).reshape(b, s, h, dh)


# ---- framed keys: the zero-copy inference path ---------------------------------------------
#
# At inference the keys and values of a layer are written once into "frames", one per local
# block: ``(B, blocks, G + block, H, dh)``, each frame holding a copy of the G global keys
# followed by the block's own keys. Three consecutive frames are then one strided view (no
# gather, no concatenation) that holds everything a block attends to, with the global keys
# three times over: an additive bias of -inf on the copies in the second and third frame
# keeps each global key once. One CPU flash call per run of windows, no merging; the global
# queries read the same frames with every copy but the first one masked.


def make_frames(n_local: int, n_global: int, block: int, like: Tensor) -> Tensor:
    """An empty frame buffer ``(B, N / block, G + block, H, dh)`` shaped after ``like``
    ``(B, *, H, dh)``."""
    b, _, h, dh = like.shape
    return like.new_empty(b, n_local // block, n_global + block, h, dh)


def frame_bias(key_mask: Tensor | None, n_global: int, block: int, dtype) -> Tensor | None:
    """Padding as an additive bias per frame ``(B, blocks, G + block)``: 0 on real keys,
    -inf on padded ones; None when nothing is padded."""
    if key_mask is None:
        return None
    b = key_mask.shape[0]
    zero = torch.zeros((), dtype=dtype, device=key_mask.device)
    bias = torch.where(key_mask, zero, float("-inf"))
    glob, local = bias[:, :n_global], bias[:, n_global:].view(b, -1, block)
    return torch.cat([glob[:, None].expand(b, local.shape[1], n_global), local], dim=2)


def _copies_bias(frames: int, n_global: int, block: int, dtype, device) -> Tensor:
    """``(frames * (G + block),)``: -inf on the global copies of every frame but the first."""
    bias = torch.zeros(frames, n_global + block, dtype=dtype, device=device)
    bias[1:, :n_global] = float("-inf")
    return bias.view(-1)


def window_runs(nb: int, ns: int, first_block: int) -> list[tuple[int, int, int]]:
    """Query blocks ``first_block .. + ns`` of ``nb`` grouped by runs that take consecutive
    windows: ``(first query block, count, first frame)``. Block i takes the window starting
    at frame max(0, min(i - 1, nb - 3)), so the two end blocks repeat a window."""
    if nb <= WINDOW_BLOCKS:
        return [(first_block, ns, 0)]
    last = nb - 1
    runs: list[tuple[int, int, int]] = []
    lo, hi = max(first_block, 1), min(first_block + ns, last)
    if first_block == 0:
        runs.append((0, 1, 0))
    if hi > lo:
        runs.append((lo, hi - lo, lo - 1))
    if first_block + ns == nb:
        runs.append((last, 1, nb - WINDOW_BLOCKS))
    return runs


def framed_window_attention(
    q: Tensor,
    frames_k: Tensor,
    frames_v: Tensor,
    bias: Tensor | None,
    n_global: int,
    block: int,
    first_block: int = 0,
    scale: float | None = None,
) -> Tensor:
    """Local queries ``q`` ``(B, S, H, dh)`` of blocks ``first_block .. + S / block`` against
    their windows in ``frames_k, frames_v`` (:func:`make_frames`), with ``bias`` from
    :func:`frame_bias`. Returns ``(B, S, H, dh)``; equal to :func:`blocked_attention`.
    Inference only on CPU (calls the CPU flash kernel directly, which has no autograd)."""
    b, s, h, dh = q.shape
    if b > 1:  # one sample at a time
        each = [slice(i, i + 1) for i in range(b)]
        parts = [(q[r], frames_k[r], frames_v[r], None if bias is None else bias[r]) for r in each]
        return torch.cat(
            [framed_window_attention(*p, n_global, block, first_block, scale) for p in parts]
        )
    nb, ns, frame = frames_k.shape[1], s // block, n_global + block
    scale = dh**-0.5 if scale is None else scale
    width = min(WINDOW_BLOCKS, nb)
    base = _copies_bias(width, n_global, block, q.dtype, q.device)
    fk, fv = frames_k[0], frames_v[0]  # (nb, F, H, dh), contiguous
    s_frame, s_tok, s_head, _ = fk.stride()
    shape, step = (width * frame, h, dh), (s_frame, s_tok, s_head, 1)

    def windows(x: Tensor, first: int, count: int) -> Tensor:  # (count, H, width * F, dh)
        view = x.as_strided((count, *shape), step, x.storage_offset() + first * s_frame)
        return view.transpose(1, 2)

    def window_bias(first: int, count: int) -> Tensor:  # (count | 1, 1, 1, width * F)
        if bias is None:
            return base.view(1, 1, 1, -1)
        pad = bias[0].contiguous()
        offset = pad.storage_offset() + first * frame
        view = pad.as_strided((count, width * frame), (frame, 1), offset)
        return (view + base)[:, None, None, :]

    runs = window_runs(nb, ns, first_block)
    qs = q[0].view(ns, block, h, dh)
    out = q.new_empty(ns, block, h, dh)
    for qb, count, wb in runs:
        rows = slice(qb - first_block, qb - first_block + count)
        qw = qs[rows].transpose(1, 2)  # (count, H, block, dh)
        if nb <= WINDOW_BLOCKS:  # every query block shares the one window
            qw = qw.transpose(0, 1).reshape(1, h, count * block, dh)
            res, _ = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                qw,
                windows(fk, 0, 1),
                windows(fv, 0, 1),
                0.0,
                False,
                attn_mask=window_bias(0, 1),
                scale=scale,
            )
            out[rows] = res.view(h, count, block, dh).permute(1, 2, 0, 3)
            continue
        res, _ = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            qw,
            windows(fk, wb, count),
            windows(fv, wb, count),
            0.0,
            False,
            attn_mask=window_bias(wb, count),
            scale=scale,
        )
        out[rows] = res.transpose(1, 2)
    return out.view(1, s, h, dh)


def framed_global_attention(
    q: Tensor,
    frames_k: Tensor,
    frames_v: Tensor,
    bias: Tensor | None,
    n_global: int,
    scale: float | None = None,
) -> Tensor:
    """Global queries ``(B, G, H, dh)`` against every key held in the frames (each global key
    once). Returns ``(B, G, H, dh)``; equal to :func:`global_attention`."""
    b, nb, frame, h, dh = frames_k.shape
    mask = _copies_bias(nb, n_global, frame - n_global, q.dtype, q.device)
    mask = mask.view(1, 1, 1, -1) if bias is None else (bias.reshape(b, -1) + mask)[:, None, None]
    keys = frames_k.view(b, nb * frame, h, dh).transpose(1, 2)
    values = frames_v.view(b, nb * frame, h, dh).transpose(1, 2)
    out = _fused_sdpa(
        q.transpose(1, 2), keys, values, mask, q.shape[-1] ** -0.5 if scale is None else scale
    )
    return out.transpose(1, 2)


def global_attention(
    q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None, scale: float | None = None
) -> Tensor:
    """Global queries ``(B, G, H, dh)`` against every key ``(B, G + N, H, dh)``."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    mask = None if key_mask is None else key_mask[:, None, None, :]
    out = _fused_sdpa(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask, scale)
    return out.transpose(1, 2)


def allowed_keys(
    n_local: int, n_global: int, block: int, key_mask: Tensor | None, batch: int
) -> Tensor:
    """The pattern as a dense boolean mask ``(B, N, G + N)`` for the local queries: the
    reference the other implementations are tested against. Quadratic; small inputs only."""
    nb = n_local // block
    starts = window_starts(nb)
    qb = torch.arange(n_local) // block
    kb = torch.arange(n_local) // block
    start = starts[qb]
    local = (kb[None] >= start[:, None]) & (kb[None] < start[:, None] + WINDOW_BLOCKS)
    full = torch.cat([torch.ones(n_local, n_global, dtype=torch.bool), local], dim=1)
    full = full[None].expand(batch, -1, -1)
    if key_mask is not None:
        full = full & key_mask[:, None, :].cpu()
    return full


def dense_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_mask: Tensor | None,
    n_global: int,
    block: int,
    scale: float | None = None,
) -> Tensor:
    """Reference for :func:`blocked_attention` over all local queries, with the dense mask
    and the math kernel."""
    b, n, _, dh = q.shape
    scale = dh**-0.5 if scale is None else scale
    mask = allowed_keys(n, n_global, block, key_mask, b).to(q.device)[:, None]  # (B, 1, N, G+N)
    with sdpa_kernel([SDPBackend.MATH]):
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, scale=scale
        )
    return out.transpose(1, 2)


# ---- FlexAttention ----------------------------------------------------------------------------


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def flex_tile(block: int) -> int:
    """FlexAttention's tile: 128 (its default) or the whole block when blocks are smaller."""
    if block <= 128:
        return block
    if block % 128:
        raise ValueError(f"flex attention needs block <= 128 or a multiple of 128, got {block}")
    return 128


def window_block_mask(n_local: int, n_global_padded: int, block: int, key_mask: Tensor):
    """A FlexAttention ``BlockMask`` for local queries over ``[global (padded) | local]`` keys,
    built from the window rule tile by tile (linear in ``N``; no dense mask).

    ``key_mask`` ``(B, G_pad + N)`` is True on real keys; ``n_global_padded`` is a multiple of
    the tile.
    """
    from torch.nn.attention.flex_attention import BlockMask

    tile = flex_tile(block)
    device = key_mask.device
    nb = n_local // block
    starts = window_starts(nb, device)
    per_block = block // tile
    g_tiles = n_global_padded // tile
    q_tiles = n_local // tile
    width = min(WINDOW_BLOCKS, nb) * per_block
    first = g_tiles + starts[torch.arange(q_tiles, device=device) // per_block] * per_block
    window = first[:, None] + torch.arange(width, device=device)  # (q_tiles, width)
    glob = torch.arange(g_tiles, device=device).expand(q_tiles, g_tiles)
    used = torch.cat([glob, window], dim=1).to(torch.int32)
    # The kernel wants a row per query tile as wide as the key tiles (only the first
    # ``counts`` entries are read): q_tiles x kv_tiles int32, 270 MB at 1M tokens.
    indices = used.new_zeros(1, 1, q_tiles, g_tiles + n_local // tile)
    indices[0, 0, :, : used.shape[1]] = used
    counts = torch.full((1, 1, q_tiles), used.shape[1], dtype=torch.int32, device=device)
    last = max(nb - WINDOW_BLOCKS, 0)

    def mask_mod(b, h, q_idx, kv_idx):
        start = torch.clamp(q_idx // block - 1, 0, last)
        kb = (kv_idx - n_global_padded) // block
        local = (kb >= start) & (kb < start + WINDOW_BLOCKS)
        return key_mask[b, kv_idx] & ((kv_idx < n_global_padded) | local)

    return BlockMask.from_kv_blocks(
        counts,
        indices,
        BLOCK_SIZE=(tile, tile),
        mask_mod=mask_mod,
        seq_lengths=(n_local, n_global_padded + n_local),
        compute_q_blocks=False,  # the transposed index is only for a backward; CPU has none
    )


def flex_window_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_mask: Tensor | None,
    n_global: int,
    block: int,
    scale: float | None = None,
    compiled: bool = True,
) -> Tensor:
    """:func:`blocked_attention` over all local queries with FlexAttention (inference).
    ``compiled=False`` runs FlexAttention's eager reference (slow; for tests)."""
    from torch.nn.attention.flex_attention import flex_attention

    if torch.is_grad_enabled() and q.requires_grad and q.device.type == "cpu":
        raise RuntimeError("flex attention has no backward on CPU; train with attention='blocked'")
    b, n, h, dh = q.shape
    scale = dh**-0.5 if scale is None else scale
    tile = flex_tile(block)
    g_pad = -(-n_global // tile) * tile
    if key_mask is None:
        key_mask = torch.ones(b, n_global + n, dtype=torch.bool, device=q.device)
    if g_pad != n_global:  # pad the global keys to whole tiles; padded keys are masked
        fill = g_pad - n_global
        pad = k.new_zeros(b, fill, h, dh)
        k = torch.cat([k[:, :n_global], pad, k[:, n_global:]], dim=1)
        v = torch.cat([v[:, :n_global], pad, v[:, n_global:]], dim=1)
        none = key_mask.new_zeros(b, fill)
        key_mask = torch.cat([key_mask[:, :n_global], none, key_mask[:, n_global:]], dim=1)
    block_mask = window_block_mask(n, g_pad, block, key_mask)
    attend = _compiled_flex() if compiled else flex_attention
    out = attend(
        q.transpose(1, 2),
        k.transpose(1, 2),
        v.transpose(1, 2),
        block_mask=block_mask,
        scale=scale,
    )
    return out.transpose(1, 2)


def local_attention(
    impl: str,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_mask: Tensor | None,
    n_global: int,
    block: int,
    scale: float | None = None,
) -> Tensor:
    """All local queries ``(B, N, H, dh)`` with the implementation named ``impl``."""
    if impl == "blocked":
        return blocked_attention(q, k, v, key_mask, n_global, block, 0, scale)
    if impl == "flex":
        return flex_window_attention(q, k, v, key_mask, n_global, block, scale)
    if impl == "dense":
        return dense_attention(q, k, v, key_mask, n_global, block, scale)
    raise ValueError(f"unknown attention implementation {impl!r}; choose from {ATTENTION_IMPLS}")

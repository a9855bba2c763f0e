"""An encoder-decoder Transformer for translation (the article's Program 4).

Pre-LN blocks on ``torch.nn.functional.scaled_dot_product_attention``: the decoder's
self-attention uses ``is_causal`` while training, and a key-padding mask is passed only when
a batch holds padding (so that unpadded batches keep SDPA's fastest kernel). There is no
attention dropout, for the same reason; dropout acts on residual branches and embeddings.

Decoding is incremental: :meth:`Seq2SeqTransformer.start_cache` computes every layer's
cross-attention keys and values once, and :meth:`Seq2SeqTransformer.decode_step` appends one
position to each layer's self-attention cache. :meth:`greedy` and :meth:`beam_search` run on
it; beam search is batched (sentences x beams in one tensor) with the GNMT length penalty
``((5 + length) / 6) ** alpha``. Both stop a sentence at ``max_len_a * source_length +
max_len_b`` generated tokens (``</s>`` included) by forcing ``</s>``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PositionKind = Literal["sinusoidal", "rotary"]


# ---- positions ------------------------------------------------------------------------------


def sinusoidal_table(length: int, dim: int) -> Tensor:
    """The fixed sine/cosine position table of Vaswani et al., ``(length, dim)``."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table


class Rotary(nn.Module):
    """Rotary position embedding (RoFormer) applied to queries and keys of self-attention.

    Rotates channel pairs ``(i, i + dim/2)`` of each head by ``position * theta_i``; the
    attention score of two tokens then depends on their relative offset only.
    """

    def __init__(self, head_dim: int, max_len: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary positions need an even head size, got {head_dim}")
        inv = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = torch.arange(max_len, dtype=torch.float32)[:, None] * inv[None]  # (L, dh/2)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: Tensor, start: int = 0) -> Tensor:
        """``x`` ``(B, H, L, dh)`` at positions ``start .. start + L - 1``."""
        length = x.shape[-2]
        cos = self.cos[start : start + length].to(x.dtype)  # (L, dh/2)
        sin = self.sin[start : start + length].to(x.dtype)
        a, b = x.chunk(2, dim=-1)
        return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


# ---- attention ------------------------------------------------------------------------------


def _split_heads(x: Tensor, heads: int) -> Tensor:
    b, n, d = x.shape
    return x.view(b, n, heads, d // heads).transpose(1, 2)  # (B, H, N, dh)


def _merge_heads(x: Tensor) -> Tensor:
    b, h, n, dh = x.shape
    return x.transpose(1, 2).reshape(b, n, h * dh)  # (B, N, D)


def key_padding_mask(mask: Tensor | None) -> Tensor | None:
    """``(B, S)`` True on real tokens -> an SDPA boolean mask ``(B, 1, 1, S)``, or ``None``
    when nothing is padded (no mask keeps SDPA on its fastest kernel)."""
    if mask is None or bool(mask.all()):
        return None
    return mask[:, None, None, :]


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, heads: int, rotary: Rotary | None = None) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.rotary = rotary

    def _qkv(self, x: Tensor, start: int) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v = (_split_heads(t, self.heads) for t in self.qkv(x).chunk(3, dim=-1))
        if self.rotary is not None:
            q, k = self.rotary(q, start), self.rotary(k, start)
        return q, k, v

    def forward(self, x: Tensor, mask: Tensor | None = None, causal: bool = False) -> Tensor:
        """``x`` ``(B, L, D)``; ``mask`` an SDPA key mask ``(B, 1, 1, L)`` or ``None``."""
        q, k, v = self._qkv(x, 0)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        return self.out(_merge_heads(y))

    def step(self, x: Tensor, cache_k: Tensor, cache_v: Tensor, t: int) -> Tensor:
        """One new position ``t``: ``x`` ``(N, 1, D)``; the caches ``(N, H, T_max, dh)`` get
        its key and value written at ``t``, and the query attends to positions ``0..t``."""
        q, k, v = self._qkv(x, t)
        cache_k[:, :, t : t + 1] = k
        cache_v[:, :, t : t + 1] = v
        y = F.scaled_dot_product_attention(q, cache_k[:, :, : t + 1], cache_v[:, :, : t + 1])
        return self.out(_merge_heads(y))


class CrossAttention(nn.Module):
    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def keys_values(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        k, v = self.kv(memory).chunk(2, dim=-1)
        return _split_heads(k, self.heads), _split_heads(v, self.heads)  # (B, H, S, dh) each

    def forward(self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        q = _split_heads(self.q(x), self.heads)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(_merge_heads(y))


# ---- blocks ---------------------------------------------------------------------------------


class FeedForward(nn.Sequential):
    def __init__(self, d_model: int, ff: int, dropout: float) -> None:
        super().__init__(
            nn.Linear(d_model, ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff, d_model)
        )


class EncoderLayer(nn.Module):
    def __init__(
        self, d_model: int, heads: int, ff: int, dropout: float, rotary: Rotary | None
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, heads, rotary)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, ff, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        x = x + self.drop(self.attn(self.norm1(x), mask))
        return x + self.drop(self.ff(self.norm2(x)))


class DecoderLayer(nn.Module):
    def __init__(
        self, d_model: int, heads: int, ff: int, dropout: float, rotary: Rotary | None
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = SelfAttention(d_model, heads, rotary)
        self.norm2 = nn.LayerNorm(d_model)
        self.cross_attn = CrossAttention(d_model, heads)
        self.norm3 = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, ff, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, k: Tensor, v: Tensor, memory_mask: Tensor | None) -> Tensor:
        # Right padding and a causal mask: a real position never sees a padded one.
        x = x + self.drop(self.self_attn(self.norm1(x), causal=True))
        x = x + self.drop(self.cross_attn(self.norm2(x), k, v, memory_mask))
        return x + self.drop(self.ff(self.norm3(x)))

    def step(
        self, x: Tensor, cache: DecoderCache, layer: int, t: int, memory_mask: Tensor | None
    ) -> Tensor:
        h = self.self_attn.step(self.norm1(x), cache.self_k[layer], cache.self_v[layer], t)
        x = x + h
        x = x + self.cross_attn(
            self.norm2(x), cache.cross_k[layer], cache.cross_v[layer], memory_mask
        )
        return x + self.ff(self.norm3(x))


@dataclass
class DecoderCache:
    """Per-layer decoder state for incremental decoding; rows are sentences (or beams).

    ``self_k``/``self_v`` ``(N, H, T_max, dh)`` fill one position per step; ``cross_k``/
    ``cross_v`` ``(N, H, S, dh)`` are the encoder memory's keys and values, computed once.
    """

    self_k: list[Tensor]
    self_v: list[Tensor]
    cross_k: list[Tensor]
    cross_v: list[Tensor]
    memory_mask: Tensor | None  # (N, 1, 1, S) or None
    length: int = 0

    def reorder(self, rows: Tensor) -> None:
        """Keep rows ``rows`` (beam search: each new beam continues an old one)."""
        for tensors in (self.self_k, self.self_v, self.cross_k, self.cross_v):
            for i, t in enumerate(tensors):
                tensors[i] = t.index_select(0, rows)
        if self.memory_mask is not None:
            self.memory_mask = self.memory_mask.index_select(0, rows)


# ---- the model ------------------------------------------------------------------------------


def length_penalty(length: int | Tensor, alpha: float) -> float | Tensor:
    """GNMT's ``((5 + length) / 6) ** alpha``; a log-probability is divided by it."""
    return ((5 + length) / 6) ** alpha


class Seq2SeqTransformer(nn.Module):
    """Encoder-decoder Transformer over one shared (source + target) vocabulary.

    ``positions``: ``"sinusoidal"`` adds a fixed table to the embeddings; ``"rotary"``
    rotates self-attention queries and keys (cross-attention has no positions). With
    ``tie_embeddings`` the output projection is the embedding matrix. ``max_len`` bounds
    source and target lengths (the position tables).
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 256,
        heads: int = 4,
        enc_layers: int = 3,
        dec_layers: int = 3,
        ff: int = 1024,
        dropout: float = 0.1,
        positions: PositionKind = "sinusoidal",
        pad_id: int = 0,
        tie_embeddings: bool = True,
        max_len: int = 256,
    ) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model={d_model} is not divisible by heads={heads}")
        if positions not in ("sinusoidal", "rotary"):
            raise ValueError(f"positions must be 'sinusoidal' or 'rotary', got {positions!r}")
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.heads = heads
        self.pad_id = pad_id
        self.max_len = max_len
        self.positions = positions
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        self.scale = math.sqrt(d_model)
        rotary = Rotary(d_model // heads, max_len) if positions == "rotary" else None
        self.rotary = rotary
        if positions == "sinusoidal":
            self.register_buffer("pos_table", sinusoidal_table(max_len, d_model), persistent=False)
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.ModuleList(
            EncoderLayer(d_model, heads, ff, dropout, rotary) for _ in range(enc_layers)
        )
        self.decoder = nn.ModuleList(
            DecoderLayer(d_model, heads, ff, dropout, rotary) for _ in range(dec_layers)
        )
        self.enc_norm = nn.LayerNorm(d_model)
        self.dec_norm = nn.LayerNorm(d_model)
        self.out = None if tie_embeddings else nn.Linear(d_model, vocab_size, bias=False)
        self._init_weights()

    def _init_weights(self) -> None:
        # Embeddings ~ N(0, 1/d): times sqrt(d) they have unit scale at the input, and as the
        # tied output matrix they give logits of unit scale from the final LayerNorm.
        nn.init.normal_(self.embed.weight, std=self.d_model**-0.5)
        with torch.no_grad():
            self.embed.weight[self.pad_id].zero_()
        for name, p in self.named_parameters():
            if p.ndim == 2 and not name.startswith("embed"):
                nn.init.xavier_uniform_(p)
            elif name.endswith(".bias"):
                nn.init.zeros_(p)

    # -- pieces -------------------------------------------------------------------------------
    def _embed(self, ids: Tensor, start: int = 0) -> Tensor:
        if ids.shape[1] + start > self.max_len:
            raise ValueError(f"sequence of {ids.shape[1] + start} tokens > max_len={self.max_len}")
        x = self.embed(ids) * self.scale  # (B, L, D)
        if self.positions == "sinusoidal":
            x = x + self.pos_table[start : start + ids.shape[1]].to(x.dtype)
        return self.drop(x)

    def project(self, hidden: Tensor) -> Tensor:
        """Decoder states ``(..., D)`` -> logits ``(..., V)``."""
        if self.out is None:
            return hidden @ self.embed.weight.t()
        return self.out(hidden)

    def encode(self, src: Tensor, src_mask: Tensor | None = None) -> Tensor:
        """``src`` ``(B, S)`` ids, ``src_mask`` ``(B, S)`` True on real tokens -> ``(B, S, D)``."""
        mask = key_padding_mask(src_mask)
        x = self._embed(src)
        for layer in self.encoder:
            x = layer(x, mask)
        return self.enc_norm(x)

    def decode(self, tgt_in: Tensor, memory: Tensor, src_mask: Tensor | None = None) -> Tensor:
        """Teacher-forced decoder states ``(B, T, D)`` (final LayerNorm applied)."""
        mask = key_padding_mask(src_mask)
        x = self._embed(tgt_in)
        for layer in self.decoder:
            k, v = layer.cross_attn.keys_values(memory)
            x = layer(x, k, v, mask)
        return self.dec_norm(x)

    def forward(self, src: Tensor, src_mask: Tensor | None, tgt_in: Tensor) -> Tensor:
        """Logits ``(B, T, V)`` for every target position, teacher-forced."""
        return self.project(self.decode(tgt_in, self.encode(src, src_mask), src_mask))

    # -- incremental decoding -----------------------------------------------------------------
    def start_cache(self, memory: Tensor, src_mask: Tensor | None, max_steps: int) -> DecoderCache:
        """Cross-attention keys/values of ``memory`` and empty self-attention caches."""
        n = memory.shape[0]
        dh = self.d_model // self.heads
        shape = (n, self.heads, max_steps, dh)
        cross = [layer.cross_attn.keys_values(memory) for layer in self.decoder]
        dtype = cross[0][0].dtype  # the projections' dtype (bfloat16 under CPU autocast)
        return DecoderCache(
            self_k=[memory.new_zeros(shape, dtype=dtype) for _ in self.decoder],
            self_v=[memory.new_zeros(shape, dtype=dtype) for _ in self.decoder],
            cross_k=[k for k, _ in cross],
            cross_v=[v for _, v in cross],
            memory_mask=key_padding_mask(src_mask),
        )

    def decode_step(self, tokens: Tensor, cache: DecoderCache) -> Tensor:
        """Feed ``tokens`` ``(N,)`` at the next position; logits ``(N, V)`` for the one after."""
        t = cache.length
        if t >= cache.self_k[0].shape[2]:
            raise ValueError(f"the cache holds {t} steps, its maximum")
        x = self._embed(tokens[:, None], start=t)  # (N, 1, D)
        for i, layer in enumerate(self.decoder):
            x = layer.step(x, cache, i, t, cache.memory_mask)
        cache.length = t + 1
        return self.project(self.dec_norm(x[:, 0]))

    def _limits(self, src_mask: Tensor, max_len_a: float, max_len_b: int) -> Tensor:
        """Most tokens to generate per sentence (``</s>`` included), ``(B,)``."""
        lengths = src_mask.sum(dim=1).to(torch.float32)
        limits = torch.floor(max_len_a * lengths + max_len_b).long()
        return limits.clamp(min=1, max=self.max_len - 1)  # one position is <s>

    @staticmethod
    def _ban(logp: Tensor, banned: tuple[int, ...]) -> None:
        if banned:
            logp[:, list(banned)] = -math.inf

    @torch.no_grad()
    def greedy(
        self,
        src: Tensor,
        src_mask: Tensor,
        bos_id: int,
        eos_id: int,
        max_len_a: float = 1.5,
        max_len_b: int = 10,
        banned_ids: Sequence[int] = (),
    ) -> Tensor:
        """Greedy decoding: ``(B, L)`` generated ids ending in ``</s>``, padded with ``pad_id``.

        ``pad_id``, ``bos_id`` and ``banned_ids`` (other special tokens) are never generated.
        """
        limits = self._limits(src_mask, max_len_a, max_len_b)
        steps = int(limits.max())
        cache = self.start_cache(self.encode(src, src_mask), src_mask, steps)
        prev = src.new_full((src.shape[0],), bos_id)
        finished = torch.zeros_like(prev, dtype=torch.bool)
        out = []
        banned = self._banned(bos_id, eos_id, banned_ids)
        for t in range(steps):
            logp = self.decode_step(prev, cache).float().log_softmax(dim=-1)
            self._ban(logp, banned)
            token = logp.argmax(dim=-1)
            token = torch.where(t + 1 >= limits, torch.full_like(token, eos_id), token)
            token = torch.where(finished, torch.full_like(token, self.pad_id), token)
            out.append(token)
            finished |= token == eos_id
            if bool(finished.all()):
                break
            prev = token
        return torch.stack(out, dim=1)

    def _banned(self, bos_id: int, eos_id: int, extra: Sequence[int]) -> tuple[int, ...]:
        return tuple(sorted({self.pad_id, bos_id, *extra} - {eos_id}))

    @torch.no_grad()
    def _keep_finished(
        self,
        normalized: Tensor,
        beam: Tensor,
        history: Tensor,
        best: Tensor,
        best_tokens: Tensor,
        t: int,
        eos_id: int,
    ) -> None:
        """Where a sentence's best hypothesis ending at step ``t`` (``normalized (B, 2K)``)
        beats its best finished one so far, it replaces it in ``best`` and ``best_tokens``."""
        cand_best, cand_at = normalized.max(dim=1)
        better = cand_best > best
        if bool(better.any()):
            idx = better.nonzero().squeeze(1)
            from_beam = beam[idx, cand_at[idx]]
            best_tokens[idx] = self.pad_id
            best_tokens[idx, :t] = history[idx, from_beam]
            best_tokens[idx, t] = eos_id
            best[idx] = cand_best[idx]

    def beam_search(
        self,
        src: Tensor,
        src_mask: Tensor,
        bos_id: int,
        eos_id: int,
        beam_size: int = 4,
        length_penalty_alpha: float = 0.6,
        max_len_a: float = 1.5,
        max_len_b: int = 10,
        banned_ids: Sequence[int] = (),
    ) -> Tensor:
        """Batched beam search: the best hypothesis per sentence, ``(B, L)`` like :meth:`greedy`.

        Each step ranks ``2 * beam_size`` continuations by summed log-probability. Those that
        end in ``</s>`` within the first ``beam_size`` ranks become finished hypotheses,
        scored by log-probability / ``((5 + length) / 6) ** alpha``; the best ``beam_size``
        others stay alive. A sentence is done at its length limit, or once its best alive
        beam, normalized at its current length, scores no better than its best finished
        hypothesis (exact for ``alpha = 0``; for ``alpha > 0`` the usual heuristic). The
        best finished hypothesis is returned. ``beam_size=1`` is greedy decoding.
        """
        b, k = src.shape[0], beam_size
        limits = self._limits(src_mask, max_len_a, max_len_b)
        steps = int(limits.max())
        memory = self.encode(src, src_mask).repeat_interleave(k, dim=0)  # (B*K, S, D)
        cache = self.start_cache(memory, src_mask.repeat_interleave(k, dim=0), steps)
        banned = self._banned(bos_id, eos_id, banned_ids)
        rows = torch.arange(b, device=src.device)
        scores = src.new_zeros((b, k), dtype=torch.float32)
        scores[:, 1:] = -math.inf  # all beams start identical: expand the first one only
        history = src.new_zeros((b, k, 0))
        prev = src.new_full((b * k,), bos_id)
        best = src.new_full((b,), -math.inf, dtype=torch.float32)
        best_tokens = src.new_full((b, steps), self.pad_id)
        done = torch.zeros(b, dtype=torch.bool, device=src.device)
        first_k = torch.arange(2 * k, device=src.device) < k
        for t in range(steps):
            logp = self.decode_step(prev, cache).float().log_softmax(dim=-1)  # (B*K, V)
            self._ban(logp, banned)
            vocab = logp.shape[-1]
            logp = logp.view(b, k, vocab)
            last = t + 1 >= limits  # (B,) this step must end the sentence
            if bool(last.any()):
                not_eos = torch.arange(vocab, device=src.device) != eos_id
                logp[last] = logp[last].masked_fill(not_eos, -math.inf)
            candidates = (scores[:, :, None] + logp).view(b, k * vocab)
            top, where = candidates.topk(2 * k, dim=1)  # (B, 2K), best first
            beam, token = where // vocab, where % vocab
            is_eos = token == eos_id
            # Finished hypotheses: </s> within the first K ranks of a sentence not yet done.
            ends = is_eos & first_k & ~done[:, None] & torch.isfinite(top)
            normalized = torch.where(
                ends, top / length_penalty(t + 1, length_penalty_alpha), -math.inf
            )
            self._keep_finished(normalized, beam, history, best, best_tokens, t, eos_id)
            # The best K continuations that do not end stay alive (there are always K:
            # at most K of the 2K candidates end in </s>, one per beam).
            alive, pick = torch.where(is_eos, -math.inf, top).topk(k, dim=1)  # (B, K)
            # Done when the best alive beam, normalized at its current length, scores no
            # better than the best finished hypothesis (exact for alpha = 0, where scores
            # only fall; the usual heuristic otherwise; with one beam, greedy's stop).
            hopeless = alive[:, 0] / length_penalty(t + 1, length_penalty_alpha) <= best
            done |= hopeless | last
            if bool(done.all()):
                break
            from_beam = beam.gather(1, pick)
            new_token = token.gather(1, pick)
            cache.reorder((rows[:, None] * k + from_beam).view(-1))
            history = torch.cat(
                [history.gather(1, from_beam[:, :, None].expand(-1, -1, t)), new_token[:, :, None]],
                dim=2,
            )
            scores = alive
            prev = new_token.view(-1)
        length = int((best_tokens != self.pad_id).sum(dim=1).max())
        return best_tokens[:, : max(length, 1)]

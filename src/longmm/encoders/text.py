"""Text encoders trained from scratch: the article's recurrent network (Program 2) and a
Transformer encoder."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from longmm.encoders.base import EncoderOutput
from longmm.errors import DataError
from longmm.models.seq2seq import EncoderLayer, Rotary, key_padding_mask
from longmm.modules.pooling import masked_max, masked_mean

Cell = Literal["lstm", "gru"]
Pooling = Literal["last", "max", "mean", "attention"]
TransformerPooling = Literal["mean", "max", "cls", "attention"]


def check_token_ids(ids: Tensor, vocab_size: int, owner: str) -> None:
    """Refuse ids outside the embedding table with an error that says what to change.

    The data module's tokenizer and the encoder's ``vocab_size`` are set separately in a
    recipe; an id past the table would otherwise be an opaque index error (or, on a GPU, a
    device-side assert).
    """
    if ids.numel() == 0:
        return
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= vocab_size:
        bad = high if high >= vocab_size else low
        raise DataError(
            f"{owner}.vocab_size",
            f"token id {bad} is outside the embedding table of {vocab_size} rows; set the "
            f"encoder's vocab_size to at least the data's vocab_size (the tokenizer's size)",
        )


def lengths_from_mask(mask: Tensor) -> Tensor:
    """Lengths ``(B,)`` of right-padded rows; refuses a mask that is not a prefix of Trues."""
    lengths = mask.sum(dim=1)
    positions = torch.arange(mask.shape[1], device=mask.device)
    if not torch.equal(mask, positions[None, :] < lengths[:, None]):
        raise ValueError("text mask must be True on a prefix of each row (right padding)")
    return lengths


class AttentionPool(nn.Module):
    """A learned score per position, softmax over the real ones, the weighted sum."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, 1))

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        scores = self.score(tokens).squeeze(-1).masked_fill(~mask, float("-inf"))  # (B, L)
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # an empty row weighs nothing
        return torch.einsum("bl,bld->bd", weights, tokens)


class BiRNNEncoder(nn.Module):
    """Embedding, a (bidirectional) LSTM or GRU, and a pooling over the real tokens.

    Rows are packed by their lengths (from ``mask``, right padding), so padding never enters
    the recurrence: a sentence gives the same outputs alone or padded in a batch. ``pooling``
    makes the one vector per text: ``last`` (the final states of both directions), ``max``
    and ``mean`` over the real positions, or ``attention`` (learned weights). ``dropout``
    applies to the embeddings, between stacked layers, and to the pooled vector.

    ``vocab_size`` must cover the tokenizer's ids: in a recipe set it to the data module's
    ``vocab_size`` (the tokenizer's upper bound); a larger id stops the first batch with an
    error that says so. A row with no real token gives zeros.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 128,
        hidden: int = 256,
        layers: int = 1,
        cell: Cell = "lstm",
        bidirectional: bool = True,
        dropout: float = 0.3,
        pooling: Pooling = "max",
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        if vocab_size < 1 or not 0 <= pad_id < vocab_size:
            raise ValueError(
                f"need vocab_size >= 1 and 0 <= pad_id < vocab_size, got "
                f"vocab_size={vocab_size}, pad_id={pad_id}"
            )
        if cell not in ("lstm", "gru"):
            raise ValueError(f"cell must be 'lstm' or 'gru', got {cell!r}")
        if pooling not in ("last", "max", "mean", "attention"):
            raise ValueError(f"pooling must be last, max, mean or attention, got {pooling!r}")
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(
            embed_dim,
            hidden,
            num_layers=layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.drop = nn.Dropout(dropout)
        self.directions = 2 if bidirectional else 1
        self.dim = hidden * self.directions
        self.attention = AttentionPool(self.dim) if pooling == "attention" else None
        self.vocab_size = vocab_size
        self.cell = cell
        self.pooling = pooling
        self.pad_id = pad_id

    def forward(self, ids: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        """``ids (B, L)`` token ids, ``mask (B, L)`` True on real tokens (default: not pad)."""
        check_token_ids(ids, self.vocab_size, type(self).__name__)
        if mask is None:
            mask = ids != self.pad_id
        mask = mask.bool()
        lengths = lengths_from_mask(mask)
        x = self.drop(self.embed(ids))  # (B, L, E)
        # pack_padded_sequence refuses empty rows: run them as one token, zero them below.
        packed = pack_padded_sequence(
            x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        out, state = self.rnn(packed)
        tokens, _ = pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])
        tokens = tokens.masked_fill(~mask[..., None], 0.0)  # (B, L, D)
        pooled = self._pool(tokens, mask, state).masked_fill((lengths == 0)[:, None], 0.0)
        return EncoderOutput(tokens=tokens, mask=mask, pooled=self.drop(pooled))

    def _pool(self, tokens: Tensor, mask: Tensor, state: Tensor | tuple[Tensor, Tensor]) -> Tensor:
        if self.pooling == "last":
            h = state[0] if isinstance(state, tuple) else state  # (layers * dirs, B, H)
            # The top layer's final state per direction: the backward one has read the whole
            # row back to its first token.
            return torch.cat(list(h[-self.directions :]), dim=-1)  # (B, D)
        if self.pooling == "max":
            return tokens.masked_fill(~mask[..., None], float("-inf")).amax(dim=1)
        if self.pooling == "mean":
            return tokens.sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp(min=1)
        assert self.attention is not None
        return self.attention(tokens, mask)


class TransformerTextEncoder(nn.Module):
    """A Transformer encoder trained from scratch: token embeddings, pre-LN layers with
    rotary positions (relative offsets, no learned table to outgrow up to ``max_length``),
    attention over the real tokens only, and a final norm.

    ``pooling`` makes the one vector per text: ``mean`` or ``max`` over the real tokens,
    ``cls`` (a learned token put before the text; ``tokens`` are the text's own positions
    without it) or ``attention`` (learned weights). Rows are right-padded; padded keys are
    masked, so a sentence gives the same outputs alone or padded in a batch (eval mode).
    A row with no real token gives zeros. ``vocab_size`` must cover the tokenizer's ids.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int = 128,
        layers: int = 2,
        heads: int = 4,
        ff_mult: int = 4,
        dropout: float = 0.1,
        pooling: TransformerPooling = "mean",
        max_length: int = 512,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        if vocab_size < 1 or not 0 <= pad_id < vocab_size:
            raise ValueError(
                f"need vocab_size >= 1 and 0 <= pad_id < vocab_size, got "
                f"vocab_size={vocab_size}, pad_id={pad_id}"
            )
        if dim % heads or (dim // heads) % 2:
            raise ValueError(f"dim={dim} must split into {heads} heads of an even size")
        if pooling not in ("mean", "max", "cls", "attention"):
            raise ValueError(f"pooling must be mean, max, cls or attention, got {pooling!r}")
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        self.scale = dim**0.5
        self.cls = nn.Parameter(torch.randn(dim) * 0.02) if pooling == "cls" else None
        rotary = Rotary(dim // heads, max_length + 1)
        self.layers = nn.ModuleList(
            EncoderLayer(dim, heads, ff_mult * dim, dropout, rotary) for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.attention = AttentionPool(dim) if pooling == "attention" else None
        self.vocab_size = vocab_size
        self.dim = dim
        self.pooling = pooling
        self.max_length = max_length
        self.pad_id = pad_id

    def forward(self, ids: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        """``ids (B, L)`` token ids, ``mask (B, L)`` True on real tokens (default: not pad)."""
        check_token_ids(ids, self.vocab_size, type(self).__name__)
        if ids.shape[1] > self.max_length:
            raise ValueError(
                f"{ids.shape[1]} tokens is longer than max_length={self.max_length} of "
                f"{type(self).__name__}; cut the text in the data module (max_length)"
            )
        if mask is None:
            mask = ids != self.pad_id
        mask = mask.bool()
        lengths = lengths_from_mask(mask)
        x = self.embed(ids) * self.scale  # (B, L, D)
        keys = mask
        if self.cls is not None:
            x = torch.cat([self.cls.expand(len(ids), 1, -1), x], dim=1)  # (B, 1 + L, D)
            keys = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
        # A row with no real key would softmax over nothing (NaN): let it attend to its
        # padding; its mask stays all False, so nothing downstream reads it.
        keys = keys | ~keys.any(dim=1, keepdim=True)
        attn_mask = key_padding_mask(keys)
        h = self.drop(x)
        for layer in self.layers:
            h = layer(h, attn_mask)
        h = self.norm(h)
        tokens = h[:, 1:] if self.cls is not None else h
        tokens = tokens.masked_fill(~mask[..., None], 0.0)  # (B, L, D)
        pooled = self._pool(h, tokens, mask).masked_fill((lengths == 0)[:, None], 0.0)
        return EncoderOutput(tokens=tokens, mask=mask, pooled=self.drop(pooled))

    def _pool(self, h: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        if self.pooling == "cls":
            return h[:, 0]
        if self.pooling == "max":
            return masked_max(tokens, mask)
        if self.pooling == "mean":
            return masked_mean(tokens, mask)
        assert self.attention is not None
        return self.attention(tokens, mask)

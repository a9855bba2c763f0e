"""Trainable long-document readers: each scores every document token as part of the answer.

All three share one interface, so one task trains them and one solver runs them::

    reader(doc (B, N) ids, doc_mask (B, N), question (B, G) ids, question_mask (B, G))
        -> logits (B, N)   # > 0: the token belongs to an answer

* :class:`AttentionReader`: the long encoder (:class:`~longmm.modules.long_encoder.LongEncoder`:
  sliding windows, the question's tokens global) and a linear head. Memory linear in ``N``.
* :class:`HierarchicalReader`: a chunk encoder (each chunk read with the question), then
  question-conditioned attention across the chunk summaries (context between chunks), then
  token scores inside the chunks it chooses.
* :class:`MemoryReader`: reads segment by segment, carrying memory tokens from one segment to
  the next (a recurrent memory Transformer); answers can depend on what came before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longmm.modules.long_encoder import LongEncoder
from longmm.modules.stack import pre_norm_stack


def question_match(doc: Tensor, question: Tensor, q_mask: Tensor) -> Tensor:
    """``(B, N)`` long: 1 where a document token's id occurs in the question (DrQA's exact
    match feature). It lets a reader find what the question names by lookup instead of
    learning to compare every token with every question token."""
    out = torch.zeros_like(doc)
    for i in range(doc.shape[0]):
        out[i] = torch.isin(doc[i], question[i][q_mask[i]]).long()
    return out


class AttentionReader(nn.Module):
    """:class:`LongEncoder` over the document with the question as global tokens, and a
    linear token head."""

    def __init__(
        self,
        vocab_size: int,
        dim: int = 64,
        layers: int = 4,
        heads: int = 2,
        block: int = 64,
        max_global: int = 96,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.encoder = LongEncoder(
            vocab_size,
            dim=dim,
            layers=layers,
            heads=heads,
            block=block,
            max_global=max_global,
            dropout=dropout,
            segment_blocks=256,
        )
        self.match = nn.Embedding(2, dim)
        self.head = nn.Linear(dim, 1)

    def forward(self, doc: Tensor, doc_mask: Tensor, question: Tensor, q_mask: Tensor) -> Tensor:
        x = self.encoder.embed(doc) + self.match(question_match(doc, question, q_mask))
        out = self.encoder.forward_embeddings(x, doc_mask, self.encoder.embed(question), q_mask)
        return self.head(out.tokens).squeeze(-1)


def _positions(length: int, dim: int, device: torch.device) -> Tensor:
    """Sinusoidal positions ``(length, dim)`` (inside a chunk or segment: short, fixed)."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    inv = 1.0 / 10000 ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2], table[:, 1::2] = torch.sin(pos * inv), torch.cos(pos * inv)
    return table


def _chunks(doc: Tensor, mask: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """``(B, N)`` -> ``(B, C, size)`` with padding (mask False) to whole chunks."""
    pad = -doc.shape[1] % size
    doc, mask = F.pad(doc, (0, pad)), F.pad(mask, (0, pad))
    return doc.view(doc.shape[0], -1, size), mask.view(mask.shape[0], -1, size)


class HierarchicalReader(nn.Module):
    """Chunk encoder -> attention over chunk summaries -> token scores in chosen chunks.

    1. Every chunk of ``chunk`` tokens is encoded with the question prepended (full
       attention inside, so each token is read in the question's light); the chunk's summary
       is the output at its first question position.
    2. The summaries, in document order, pass through a small Transformer with a query
       token (the pooled question): context across chunks and sections. It gives each chunk
       a relevance logit.
    3. Token logits come from the token states plus their chunk's context vector; at
       inference (``choose`` chunks) only the tokens of the ``choose`` most relevant chunks
       keep their scores. Training adds a chunk-relevance loss (:meth:`chunk_logits`).
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int = 64,
        heads: int = 2,
        chunk: int = 128,
        chunk_layers: int = 2,
        doc_layers: int = 2,
        choose: int = 8,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.chunk, self.choose, self.dim = chunk, choose, dim
        self.embed = nn.Embedding(vocab_size, dim)
        self.segment = nn.Embedding(2, dim)  # question / chunk
        self.match = nn.Embedding(2, dim)
        self.chunk_encoder = pre_norm_stack(dim, heads, chunk_layers, dropout)
        self.doc_encoder = pre_norm_stack(dim, heads, doc_layers, dropout)
        self.relevance = nn.Linear(dim, 1)
        self.head = nn.Sequential(nn.LayerNorm(2 * dim), nn.Linear(2 * dim, 1))
        self.last_chunk_logits: Tensor | None = None

    def _encode_chunks(
        self, doc: Tensor, mask: Tensor, question: Tensor, q_mask: Tensor, batch_chunks: int
    ) -> tuple[Tensor, Tensor]:
        """Token states ``(B, C, chunk, D)`` and summaries ``(B, C, D)``, ``batch_chunks``
        chunks at a time (memory stays bounded at any length)."""
        b, c, size = doc.shape
        g = question.shape[1]
        match = question_match(doc.reshape(b, -1), question, q_mask).view(b * c, size)
        pos = _positions(g + size, self.dim, doc.device)
        q = self.embed(question) + self.segment.weight[0]  # (B, G, D)
        flat_doc, flat_mask = doc.reshape(b * c, size), mask.reshape(b * c, size)
        states, summaries = [], []
        for i in range(0, b * c, batch_chunks):
            ids, m = flat_doc[i : i + batch_chunks], flat_mask[i : i + batch_chunks]
            owner = torch.arange(i, i + len(ids), device=doc.device) // c
            tokens = self.embed(ids) + self.segment.weight[1] + self.match(match[i : i + len(ids)])
            x = torch.cat([q[owner], tokens], dim=1) + pos
            keep = torch.cat([q_mask[owner], m], dim=1)
            keep[:, 0] = True  # a padded chunk still has one key (its output is ignored)
            y = self.chunk_encoder(x, src_key_padding_mask=~keep)
            states.append(y[:, g:])
            summaries.append(y[:, 0])
        return (
            torch.cat(states).view(b, c, size, self.dim),
            torch.cat(summaries).view(b, c, self.dim),
        )

    def forward(
        self,
        doc: Tensor,
        doc_mask: Tensor,
        question: Tensor,
        q_mask: Tensor,
        batch_chunks: int = 256,
    ) -> Tensor:
        n = doc.shape[1]
        ids, mask = _chunks(doc, doc_mask, self.chunk)
        states, summaries = self._encode_chunks(ids, mask, question, q_mask, batch_chunks)
        has = mask.any(dim=2)  # (B, C) chunks with real tokens
        context = self.doc_encoder(
            summaries + _positions(summaries.shape[1], self.dim, doc.device),
            src_key_padding_mask=~has,
        )  # (B, C, D)
        chunk_logits = self.relevance(context).squeeze(-1).masked_fill(~has, -1e4)
        self.last_chunk_logits = chunk_logits
        wide = context[:, :, None].expand_as(states)
        logits = self.head(torch.cat([states, wide], dim=-1)).squeeze(-1)  # (B, C, chunk)
        if not self.training and self.choose:
            top = chunk_logits.topk(min(self.choose, chunk_logits.shape[1]), dim=1).indices
            chosen = torch.zeros_like(has).scatter_(1, top, True)
            logits = logits.masked_fill(~chosen[:, :, None], -1e4)
        return logits.reshape(doc.shape[0], -1)[:, :n]

    def chunk_targets(self, labels: Tensor) -> Tensor:
        """Chunk relevance targets ``(B, C)``: 1 where a chunk holds an answer token."""
        lab, _ = _chunks(labels, labels > 0, self.chunk)
        return (lab > 0).any(dim=2).float()


class MemoryReader(nn.Module):
    """Reads ``segment`` tokens at a time: ``[memory | question | segment]`` through a
    Transformer; the outputs at the memory positions become the next segment's memory. Token
    logits come from the segment's outputs. Training back-propagates through all segments."""

    def __init__(
        self,
        vocab_size: int,
        dim: int = 64,
        heads: int = 2,
        layers: int = 3,
        segment: int = 256,
        memory: int = 16,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.segment_len, self.memory, self.dim = segment, memory, dim
        self.embed = nn.Embedding(vocab_size, dim)
        self.kind = nn.Embedding(3, dim)  # memory / question / document
        self.match = nn.Embedding(2, dim)
        self.init_memory = nn.Parameter(torch.randn(memory, dim) * 0.02)
        self.encoder = pre_norm_stack(dim, heads, layers, dropout)
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 1))

    def forward(self, doc: Tensor, doc_mask: Tensor, question: Tensor, q_mask: Tensor) -> Tensor:
        b, n = doc.shape
        g, m, s = question.shape[1], self.memory, self.segment_len
        q = self.embed(question) + self.kind.weight[1]
        mem = self.init_memory[None].expand(b, m, self.dim)
        pos = _positions(m + g + s, self.dim, doc.device)
        match = self.match(question_match(doc, question, q_mask))
        logits = []
        for start in range(0, n, s):
            ids, keep = doc[:, start : start + s], doc_mask[:, start : start + s]
            width = ids.shape[1]
            tokens = self.embed(ids) + self.kind.weight[2] + match[:, start : start + s]
            x = torch.cat([mem, q, tokens], dim=1)
            x = x + pos[: m + g + width]
            real = torch.ones(b, m, dtype=torch.bool, device=doc.device)
            y = self.encoder(x, src_key_padding_mask=~torch.cat([real, q_mask, keep], dim=1))
            # A fully padded segment (a shorter document in the batch) keeps its memory.
            alive = keep.any(dim=1)[:, None, None]
            mem = torch.where(alive, y[:, :m], mem)
            logits.append(self.head(y[:, m + g :]).squeeze(-1))
        return torch.cat(logits, dim=1)


READERS: dict[str, type[nn.Module]] = {
    "attention": AttentionReader,
    "hierarchical": HierarchicalReader,
    "memory": MemoryReader,
}

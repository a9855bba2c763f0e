"""The span head: a small trained head over the frozen pretrained MiniLM that finds the
answer to a question in an evidence passage (start and end token), or says it is not there;
:class:`SpanExtractor` runs it as an ``AnswerExtractor`` for the retrieval reader.

How it reads: the question and a window of the passage go through all-MiniLM-L6-v2 together
(``[CLS] question [SEP] passage [SEP]``, segment ids 0/1), frozen; the head (a projection, one
Transformer layer and a start/end scorer, about 0.3 M weights) scores every passage token as
the start and as the end of the answer. A span scores ``start + end`` minus the score of the
"no answer" position ([CLS]); the best span over all windows of all passages is the answer.
Spans are widened to whole words (a number that WordPiece cut in pieces comes back whole).

How it is trained (``longmm fit --config recipes/span_head.yaml``): the
:class:`~longmm.tasks.span_head.SpanExtraction` task on
:class:`~longmm.data.span_data.SpanData`, questions generated from many fact families
(:mod:`longmm.reading.synth.facts`). The trained head ships in
``longmm/reading/weights/span_head.safetensors``; :func:`load_span_head` loads it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from longmm.errors import DataError
from longmm.modules.stack import pre_norm_stack
from longmm.reading.answer.base import AnswerSpan, Evidence
from longmm.reading.answer.sentence import STOPWORDS
from longmm.reading.sentences import split_sentences

PACKAGED_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "span_head.safetensors"
FEATURE_DIM = 384  # all-MiniLM-L6-v2's hidden size


# -- the frozen encoder and the inputs -----------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _minilm() -> tuple[Any, Any]:
    """The packaged MiniLM (eval mode, no gradients) and its fast tokenizer."""
    from tokenizers import Tokenizer

    from longmm.data.text import pretrained_path
    from longmm.encoders.pretrained import load_pretrained

    folder = pretrained_path(None)
    model = load_pretrained(folder).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return model, tok


@dataclass(frozen=True)
class Window:
    """One encoder input: ``[CLS] q [SEP] passage tokens [first, first+n) [SEP]``.

    ``offsets`` are the character ranges (in the passage) of the window's passage tokens;
    ``word_start``/``word_end`` tell where each passage token's word starts and ends (so a
    span can be widened to whole words)."""

    ids: list[int]
    type_ids: list[int]  # MiniLM's segments: 0 question, 1 passage
    passage_at: int  # index of the first passage token in ``ids``
    offsets: list[tuple[int, int]]
    roles: list[int]  # the head's: 0 question, 1 passage, 2 passage token that is a question word


def _encode_text(text: str) -> tuple[list[int], list[tuple[int, int]]]:
    _, tok = _minilm()
    enc = tok.encode(text, add_special_tokens=False)
    return list(enc.ids), list(enc.offsets)


def make_windows(
    question: str, passage: str, max_length: int = 256, stride: int = 64
) -> list[Window]:
    """Windows over ``passage`` that fit ``max_length`` with the question, overlapping by
    ``stride`` tokens (an answer cut by one window's edge is whole in the next)."""
    _, tok = _minilm()
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    q_ids, _ = _encode_text(question)
    q_ids = q_ids[: max_length // 2]
    p_ids, p_offsets = _encode_text(passage)
    asked = _content_ids(q_ids)
    room = max_length - len(q_ids) - 3
    step = max(room - stride, 1)
    windows = []
    first = 0
    while True:
        ids = p_ids[first : first + room]
        head = [cls_id, *q_ids, sep_id]
        windows.append(
            Window(
                ids=[*head, *ids, sep_id],
                type_ids=[0] * len(head) + [1] * (len(ids) + 1),
                passage_at=len(head),
                offsets=p_offsets[first : first + room],
                roles=[0] * len(head) + [2 if i in asked else 1 for i in ids] + [1],
            )
        )
        if first + room >= len(p_ids):
            return windows
        first += step


@functools.lru_cache(maxsize=1)
def _content_vocab() -> frozenset[int]:
    """Token ids that carry content (not punctuation, not stopwords): the question words
    worth matching in a passage (the classic exact-match feature of span readers)."""
    _, tok = _minilm()
    keep = set()
    for token, i in tok.get_vocab().items():
        word = token.removeprefix("##")
        special = token.startswith("[") and token.endswith("]")
        if word.isalnum() and not special and word not in STOPWORDS:
            keep.add(i)
    return frozenset(keep)


def _content_ids(ids: Sequence[int]) -> set[int]:
    vocab = _content_vocab()
    return {i for i in ids if i in vocab}


def _pad(rows: Sequence[Sequence[int]], value: int = 0) -> Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


@torch.no_grad()
def encode_windows(windows: Sequence[Window], batch_size: int = 32) -> list[Tensor]:
    """Frozen MiniLM features of each window: ``(L_i, 384)`` float32, one per window."""
    model, _ = _minilm()
    out: list[Tensor] = []
    order = sorted(range(len(windows)), key=lambda i: len(windows[i].ids))  # less padding
    feats: dict[int, Tensor] = {}
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        ids = _pad([windows[i].ids for i in idx])
        types = _pad([windows[i].type_ids for i in idx])
        mask = _pad([[1] * len(windows[i].ids) for i in idx])
        hidden = model(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        for row, i in enumerate(idx):
            feats[i] = hidden[row, : len(windows[i].ids)]
    out = [feats[i] for i in range(len(windows))]
    return out


# -- the head ---------------------------------------------------------------------------------
class SpanHead(nn.Module):
    """Start/end scores per token from frozen encoder features.

    ``features (B, L, in_dim)``, ``mask (B, L)`` True on real tokens, ``type_ids (B, L)``
    (0 question, 1 passage, 2 passage token that is a content word of the question) ->
    ``(start, end)`` logits ``(B, L)``; padding gets -inf."""

    def __init__(
        self,
        in_dim: int = FEATURE_DIM,
        dim: int = 128,
        heads: int = 4,
        layers: int = 1,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, dim)
        self.segment = nn.Embedding(3, dim)  # question / passage / passage word in question
        self.blocks = pre_norm_stack(dim, heads, layers, dropout, ff_dim=2 * dim, activation="relu")
        self.norm = nn.LayerNorm(dim)
        self.score = nn.Linear(dim, 2)

    def forward(self, features: Tensor, mask: Tensor, type_ids: Tensor) -> tuple[Tensor, Tensor]:
        x = self.proj(features) + self.segment(type_ids)
        x = self.norm(self.blocks(x, src_key_padding_mask=~mask))
        logits = self.score(x).masked_fill(~mask[..., None], float("-inf"))  # (B, L, 2)
        return logits[..., 0], logits[..., 1]


def best_span(
    start: Tensor,
    end: Tensor,
    passage_at: int,
    n_passage: int,
    max_tokens: int,
    sentence: Sequence[int] | None = None,
) -> tuple[int, int, float]:
    """Best ``(i, j)`` passage-token span (``i <= j < i + max_tokens``) of one window and its
    score over the no-answer score (``start[0] + end[0]``, the [CLS] position).

    ``sentence`` numbers the sentence of each passage token: a span then starts and ends in
    one sentence (an answer does not run across a sentence end, a heading or a line break)."""
    s = start[passage_at : passage_at + n_passage]
    e = end[passage_at : passage_at + n_passage]
    pair = s[:, None] + e[None, :]  # (n, n)
    n = pair.shape[0]
    allowed = torch.ones(n, n, dtype=torch.bool).triu().tril(max_tokens - 1)
    if sentence is not None:
        ids = torch.as_tensor(list(sentence), dtype=torch.long)
        allowed &= ids[:, None] == ids[None, :]
    pair = pair.masked_fill(~allowed, float("-inf"))
    flat = int(torch.argmax(pair))
    i, j = divmod(flat, n)
    return i, j, float(pair[i, j] - (start[0] + end[0]))


def collate_spans(items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    width = max(x["features"].shape[0] for x in items)
    b = len(items)
    feats = torch.zeros(b, width, items[0]["features"].shape[1])
    types = torch.zeros(b, width, dtype=torch.long)
    mask = torch.zeros(b, width, dtype=torch.bool)
    for i, x in enumerate(items):
        n = x["features"].shape[0]
        feats[i, :n] = x["features"].float()
        types[i, :n] = x["type_ids"]
        mask[i, :n] = True
    return {
        "features": feats,
        "type_ids": types,
        "mask": mask,
        "start": torch.stack([x["start"] for x in items]),
        "end": torch.stack([x["end"] for x in items]),
    }


def load_span_head(path: str | Path | None = None) -> SpanHead:
    """A trained head from a safetensors file (default: the one that ships in the package)."""
    from safetensors import safe_open

    from longmm.runs import load_weights

    path = Path(path) if path else PACKAGED_WEIGHTS
    if not path.is_file():
        raise DataError(str(path), "span head weights not found")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if "architecture" not in meta:
        raise DataError(str(path), "no 'architecture' metadata: not a span head file")
    head = SpanHead(**json.loads(meta["architecture"]))
    head.load_state_dict(load_weights(path))
    return head.eval()


# -- the extractor the reader uses ----------------------------------------------------------
class SpanExtractor:
    """The trained span head as the retrieval reader's ``AnswerExtractor``.

    Every passage is read in short overlapping windows of ``max_length`` tokens with the
    question (on real prose the head places spans better in short windows than in long ones:
    on the essay needles that failed with 192-token windows, 96 fixed 4 of 5); the best
    span of all (widened to whole words) is the answer, scored by its margin over "no
    answer". ``min_score=None`` always answers with the best span; a number returns ``None``
    when no span beats "no answer" by that margin."""

    def __init__(
        self,
        weights: str | Path | None = None,
        max_length: int = 96,
        stride: int = 24,
        max_answer_tokens: int = 12,
        min_score: float | None = None,
        batch_size: int = 16,
    ) -> None:
        self.head = load_span_head(weights)
        self.max_length = max_length
        self.stride = stride
        self.max_answer_tokens = max_answer_tokens
        self.min_score = min_score
        self.batch_size = batch_size

    @torch.no_grad()
    def extract(self, question: str, passages: Sequence[Evidence]) -> AnswerSpan | None:
        jobs: list[tuple[int, Window]] = []
        sentence_ends: dict[int, np.ndarray] = {}
        for pi, p in enumerate(passages):
            if p.text.strip():
                jobs += [
                    (pi, w) for w in make_windows(question, p.text, self.max_length, self.stride)
                ]
                sentence_ends[pi] = np.array([e for _, e in split_sentences(p.text)])
        if not jobs:
            return None
        feats = encode_windows([w for _, w in jobs], self.batch_size)
        best: tuple[float, int, int, int] | None = None
        for b in range(0, len(jobs), self.batch_size):
            chunk = list(range(b, min(b + self.batch_size, len(jobs))))
            batch = collate_spans(
                [
                    {
                        "features": feats[k],
                        "type_ids": torch.tensor(jobs[k][1].roles),
                        "start": torch.tensor(0),
                        "end": torch.tensor(0),
                    }
                    for k in chunk
                ]
            )
            start, end = self.head(batch["features"], batch["mask"], batch["type_ids"])
            for row, k in enumerate(chunk):
                pi, w = jobs[k]
                token_starts = np.array([a for a, _ in w.offsets])
                i, j, margin = best_span(
                    start[row],
                    end[row],
                    w.passage_at,
                    len(w.offsets),
                    self.max_answer_tokens,
                    np.searchsorted(sentence_ends[pi], token_starts, side="right").tolist(),
                )
                if best is None or margin > best[0]:
                    best = (margin, pi, w.offsets[i][0], w.offsets[j][1])
        assert best is not None
        margin, pi, a, b = best
        if self.min_score is not None and margin < self.min_score:
            return None
        passage = passages[pi]
        a, b = _whole_words(passage.text, a, b)
        return AnswerSpan(passage.text[a:b], pi, passage.start + a, passage.start + b, margin)


def _whole_words(text: str, a: int, b: int) -> tuple[int, int]:
    """Widen ``[a, b)`` to whole alphanumeric words (WordPiece may end a span mid-word)."""
    while a > 0 and text[a - 1].isalnum() and text[a].isalnum():
        a -= 1
    while b < len(text) and text[b].isalnum() and text[b - 1].isalnum():
        b += 1
    return a, b

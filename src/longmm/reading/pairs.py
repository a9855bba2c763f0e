"""The inputs of the cross-encoder and the answer model (no torch): a question and a passage
as one sequence, ``[CLS] question [SEP] passage [SEP]`` (segment ids 0 then 1), tokenized by
the model's own fast tokenizer; long passages in overlapping windows that keep every
context token's character offsets, so that a predicted span maps back to the text.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from longmm.errors import DataError


@functools.lru_cache(maxsize=4)
def pair_tokenizer(path: str | None = None):  # -> tokenizers.Tokenizer
    """The model's fast tokenizer, no padding and no truncation set."""
    from tokenizers import Tokenizer

    from longmm.reading.enhance import model_folder

    file = model_folder(path) / "tokenizer.json"
    if not file.is_file():
        raise DataError(
            str(file.parent), "no tokenizer.json (a fast tokenizer) in the model folder"
        )
    tok = Tokenizer.from_file(str(file))
    tok.no_padding()
    tok.no_truncation()
    return tok


def encode_pairs(
    tokenizer, question: str, texts: Sequence[str], max_length: int, max_question: int = 48
) -> tuple[list[list[int]], list[list[int]]]:
    """``[CLS] question [SEP] text [SEP]`` ids and segment ids, the text cut to fit
    ``max_length`` (the question to ``max_question`` tokens)."""
    q = tokenizer.encode(question, add_special_tokens=False).ids[:max_question]
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    room = max(1, max_length - len(q) - 3)
    rows, types = [], []
    for enc in tokenizer.encode_batch(list(texts), add_special_tokens=False):
        p = enc.ids[:room]
        rows.append([cls_id, *q, sep_id, *p, sep_id])
        types.append([0] * (len(q) + 2) + [1] * (len(p) + 1))
    return rows, types


_TRUNCATION = threading.Lock()  # truncation is a setting of the shared tokenizer


@dataclass
class QAWindow:
    """One window of a question's context: token ids, where each context token lies in the
    context (``(0, 0)`` for question and special tokens) and the answer's token positions
    (``0, 0``: [CLS], no answer in this window)."""

    example: int
    ids: list[int]
    types: list[int]
    offsets: list[tuple[int, int]]
    context_from: int  # first context token
    start: int
    end: int


def qa_windows(
    tokenizer, question: str, context: str, max_length: int, stride: int, max_question: int = 64
):  # -> list[tokenizers.Encoding]
    """Overlapping windows ``[CLS] question [SEP] context piece [SEP]`` over the whole context
    (successive pieces share ``stride`` tokens)."""
    q = tokenizer.encode(question, add_special_tokens=False)
    if len(q.ids) > max_question:
        question = question[: q.offsets[max_question - 1][1]]
    with _TRUNCATION:
        tokenizer.enable_truncation(max_length, stride=stride, strategy="only_second")
        try:
            enc = tokenizer.encode(question, context)
        finally:
            tokenizer.no_truncation()
    return [enc, *enc.overflowing]


def window_rows(example_index: int, windows, answers: Sequence[tuple[str, int]]) -> list[QAWindow]:
    out = []
    for enc in windows:
        seq = enc.sequence_ids
        ctx = [i for i, s in enumerate(seq) if s == 1]
        offsets = [o if s == 1 else (0, 0) for o, s in zip(enc.offsets, seq, strict=True)]
        start = end = 0
        if ctx:
            lo, hi = offsets[ctx[0]][0], offsets[ctx[-1]][1]
            for text, a in answers:
                b = a + len(text)
                if lo <= a and b <= hi:
                    start = next(i for i in ctx if offsets[i][1] > a)
                    end = max(i for i in ctx if offsets[i][0] < b)
                    break
        out.append(
            QAWindow(
                example_index,
                list(enc.ids),
                list(enc.type_ids),
                offsets,
                ctx[0] if ctx else len(seq),
                start,
                end,
            )
        )
    return out

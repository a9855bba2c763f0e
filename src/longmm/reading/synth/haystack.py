"""Haystacks for the long-context tasks (:mod:`longmm.reading.synth.needles`): the text
around the needles, how its tokens are counted, and how needles (sentences, figure and clip
captions) are laid into it at their depths.

**Tokens.** Lengths count the all-MiniLM-L6-v2 WordPiece tokens of the document text,
without [CLS]/[SEP] (``TokenCounter("minilm")``, the default). WordPiece first splits at
whitespace and punctuation, so the count of units joined by spaces is the sum of their counts:
each haystack unit (a sentence or a filler line) is tokenized once and cached, and a 1M-token
document is counted exactly without tokenizing it whole. ``TokenCounter("words")`` counts
whitespace-separated words instead (a word is about 1.26 MiniLM tokens on the filler and on
the Paul Graham essays), for when no tokenizer should be loaded.

**Layout.** Units are joined by spaces, with a paragraph break (a blank line) every few
units, as in real text.

**Depth.** ``depth`` in [0, 1] is the fraction of the document's tokens that come before the
target needle, not counting the task's fixed intro (the passkey task's opening lines); the
needle sits at the unit boundary nearest to it.

**Haystacks.** ``"filler"``: the standard passkey filler ("The grass is green. The sky is
blue. ..." repeated); ``"words"``: sentences of random English words from the MiniLM
vocabulary; or the path of a folder of ``.txt`` files (for example
``../shared/data/paul_graham_essays/essays``), read sentence by sentence from a random start,
wrapping around. A haystack never contains an answer: values are redrawn until they occur
nowhere in it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from longmm.errors import DataError

PASSKEY_FILLER = (
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
)
PARAGRAPH_UNITS = 8  # units (sentences, filler lines, needles) per paragraph

HaystackKind = str  # "filler", "words", or a folder of .txt files
TokenMethod = Literal["minilm", "words"]


# -- token counting -----------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _minilm_tokenizer():  # a tokenizers.Tokenizer, imported lazily
    from tokenizers import Tokenizer

    from longmm.data.text import pretrained_path

    tok = Tokenizer.from_file(str(pretrained_path(None) / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


class TokenCounter:
    """Counts tokens of text units, caching each distinct unit (haystacks repeat a lot)."""

    def __init__(self, method: TokenMethod = "minilm") -> None:
        if method not in ("minilm", "words"):
            raise ValueError(f"token method must be 'minilm' or 'words', got {method!r}")
        self.method = method
        self._cache: dict[str, int] = {}

    def count(self, text: str) -> int:
        """Tokens in ``text`` (no special tokens)."""
        if self.method == "words":
            return len(text.split())
        return len(_minilm_tokenizer().encode(text, add_special_tokens=False).ids)

    def count_units(self, units: Sequence[str]) -> list[int]:
        """Counts for many units at once; cached by text."""
        missing = list({u for u in units if u not in self._cache})
        if missing:
            if self.method == "words":
                counts = [len(u.split()) for u in missing]
            else:
                encs = _minilm_tokenizer().encode_batch(missing, add_special_tokens=False)
                counts = [len(e.ids) for e in encs]
            self._cache.update(zip(missing, counts, strict=True))
        return [self._cache[u] for u in units]


@functools.lru_cache(maxsize=4)
def default_counter(method: TokenMethod = "minilm") -> TokenCounter:
    return TokenCounter(method)


# -- attachments ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Attachment:
    """A figure or an audio clip inside a document, at character ``position`` of its text.

    ``label`` is how the text names it ("Figure 12", "Audio clip 3"); ``data`` is the image
    (H, W) uint8 or the waveform (T,) float32 at ``sample_rate``; ``target`` is the digit it
    shows or says (kept for grading, never shown to a reader)."""

    kind: Literal["image", "audio"]
    label: str
    position: int
    data: np.ndarray = field(repr=False)
    target: str
    sample_rate: int | None = None
    source: str = ""


# -- haystacks -----------------------------------------------------------------------------------
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")


@functools.lru_cache(maxsize=8)
def _folder_units(folder: str) -> tuple[str, ...]:
    root = Path(folder)
    if not root.is_dir():
        raise DataError(folder, "haystack folder not found (give 'filler', 'words' or a folder)")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in (".txt", ".md"))
    if not files:
        raise DataError(folder, "no .txt or .md files to build a haystack from")
    units: list[str] = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(str(path), f"not UTF-8 text ({exc.reason})") from None
        for paragraph in re.split(r"\n\s*\n", text):
            flat = " ".join(paragraph.split())
            units += [s for s in _SENTENCE_END.split(flat) if s]
    if len(units) < 10:
        raise DataError(folder, f"only {len(units)} sentences; a haystack needs more text")
    return tuple(units)


@functools.lru_cache(maxsize=1)
def vocabulary_words() -> tuple[str, ...]:
    """Plain lowercase English words of MiniLM's vocabulary (each one token), 3-10 letters."""
    from longmm.data.text import pretrained_path

    lines = (pretrained_path(None) / "vocab.txt").read_text(encoding="utf-8").split("\n")
    return tuple(w for w in lines[1000:] if w.isascii() and w.isalpha() and 3 <= len(w) <= 10)


def _filler_units(rng: np.random.Generator) -> Iterator[str]:
    while True:
        yield PASSKEY_FILLER


def _word_units(rng: np.random.Generator) -> Iterator[str]:
    words = vocabulary_words()
    while True:
        n = int(rng.integers(8, 16))
        picks = [words[i] for i in rng.integers(0, len(words), size=n)]
        yield " ".join(picks).capitalize() + "."


def _folder_unit_stream(folder: str, rng: np.random.Generator) -> Iterator[str]:
    units = _folder_units(folder)
    i = int(rng.integers(0, len(units)))
    while True:
        yield units[i]
        i = (i + 1) % len(units)


def haystack_units(kind: HaystackKind, rng: np.random.Generator) -> Iterator[str]:
    """An endless stream of haystack units (sentences or filler lines)."""
    if kind == "filler":
        return _filler_units(rng)
    if kind == "words":
        return _word_units(rng)
    return _folder_unit_stream(str(Path(kind).expanduser()), rng)


# -- assembly ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Insert:
    depth: float
    text: str
    target: bool = False  # a needle whose span is reported
    attachment: tuple | None = None  # (kind, label, data, target, sample_rate, source)


def assemble(
    units: Iterator[str],
    inserts: list[Insert],
    length: int,
    counter: TokenCounter,
    head: str = "",
) -> tuple[str, int, list[tuple[int, int]], list[Attachment]]:
    """Text of about ``length`` tokens: haystack units with ``inserts`` at their depths."""
    fixed = counter.count_units([i.text for i in inserts] + ([head] if head else []))
    budget = length - sum(fixed)
    if budget < 32:
        raise DataError(f"length={length}", "too short for the needles; ask for more tokens")
    hay: list[str] = []
    counts: list[int] = []
    total = 0
    batch_size = 4096
    while total < budget:
        batch = [next(units) for _ in range(batch_size)]
        for unit, n in zip(batch, counter.count_units(batch), strict=True):
            if total + n > budget and total > 0:
                break
            hay.append(unit)
            counts.append(n)
            total += n
        else:
            continue
        break
    # Token offset of each unit boundary, then the boundary nearest to each insert's depth.
    bounds = np.concatenate([[0], np.cumsum(counts)])
    head_tokens = fixed[-1] if head else 0
    grand = total + sum(fixed)
    order = sorted(range(len(inserts)), key=lambda k: inserts[k].depth)
    at: dict[int, list[int]] = {}
    placed_tokens = head_tokens
    for k in order:
        # Tokens before the insert = head + haystack before it + earlier inserts.
        want = inserts[k].depth * (grand - head_tokens) + head_tokens - placed_tokens
        b = int(np.clip(np.searchsorted(bounds, want), 0, len(hay)))
        if b > 0 and abs(bounds[b - 1] - want) <= abs(bounds[b] - want):
            b -= 1
        at.setdefault(b, []).append(k)
        placed_tokens += fixed[k]
    pieces: list[str] = []
    offset = 0
    spans: dict[int, tuple[int, int]] = {}  # by insert index: the plan's first is the target
    attachments: list[Attachment] = []

    def put(text: str) -> int:
        nonlocal offset
        if pieces:
            # Paragraphs of PARAGRAPH_UNITS units, as in real text (readers split at them).
            sep = "\n\n" if (len(pieces) + 1) // 2 % PARAGRAPH_UNITS == 0 else " "
            pieces.append(sep)
            offset += len(sep)
        start = offset
        pieces.append(text)
        offset = start + len(text)
        return start

    if head:
        put(head)
    for b in range(len(hay) + 1):
        for k in at.get(b, ()):
            ins = inserts[k]
            start = put(ins.text)
            if ins.target:
                spans[k] = (start, start + len(ins.text))
            if ins.attachment is not None:
                kind, label, data, target, sr, source = ins.attachment
                attachments.append(Attachment(kind, label, start, data, target, sr, source))
        if b < len(hay):
            put(hay[b])
    return "".join(pieces), grand, [spans[k] for k in sorted(spans)], attachments

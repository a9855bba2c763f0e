"""Documents and chunks: cleaned text with its structure, and pieces of it that cite back.

Every offset in this module indexes :attr:`Document.text`, the cleaned text of a document
(for text files :meth:`Document.raw_span` maps a range further back to the characters of the
file as read). A :class:`Chunk` always satisfies ``chunk.text == doc.text[chunk.start:chunk.end]``,
so an answer that cites a chunk cites the exact text it was read from.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

BlockKind = Literal["paragraph", "heading", "list", "table", "code", "image", "audio"]
AssetKind = Literal["image", "audio"]


@dataclass(frozen=True)
class Block:
    """A structural unit of a document: ``text[start:end]`` is one paragraph, heading, list,
    table, code block, or the placeholder line of a figure or audio clip.

    ``level`` is the heading level (1 = top) for headings and 0 otherwise.
    """

    kind: BlockKind
    start: int
    end: int
    level: int = 0


@dataclass(frozen=True)
class Asset:
    """A figure or audio clip inside a document, at a position in the text.

    The document's text holds a placeholder line for it (``[Figure 12: caption]``) at
    ``text[start:end]``, so that retrieval and citations see it where it stands. ``path`` is
    the file (absolute, resolved against the document's folder); ``label`` the document's name
    for it (``Figure 12``); ``meta`` anything else the source gave.
    """

    kind: AssetKind
    path: str
    start: int
    end: int
    caption: str = ""
    label: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Document:
    """One cleaned document: its text, where its pages start, its blocks and assets.

    ``source`` names it in citations (a file path or a given name). ``page_starts`` holds the
    offset where each page begins (page 1 first; empty when the format has no pages).
    ``blocks`` are in text order and do not overlap; headings among them give the section
    path of any offset. ``raw_offsets`` (text formats only) has ``len(text) + 1`` entries:
    ``raw_offsets[i]`` is the index in the file's decoded text of cleaned character ``i``.
    """

    text: str
    source: str
    blocks: list[Block] = field(default_factory=list)
    page_starts: list[int] = field(default_factory=list)
    assets: list[Asset] = field(default_factory=list)
    raw_offsets: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._heading_starts: list[int] | None = None
        self._heading_paths: list[tuple[str, ...]] | None = None

    def __len__(self) -> int:
        return len(self.text)

    # -- where is an offset -------------------------------------------------------------------
    def page_at(self, offset: int) -> int | None:
        """The 1-based page holding ``offset``; ``None`` when the document has no pages."""
        if not self.page_starts:
            return None
        return max(1, bisect.bisect_right(self.page_starts, offset))

    def section_at(self, offset: int) -> tuple[str, ...]:
        """Titles of the headings above ``offset``, outermost first (``()`` before any)."""
        if self._heading_starts is None:
            self._index_headings()
        assert self._heading_starts is not None and self._heading_paths is not None
        i = bisect.bisect_right(self._heading_starts, offset) - 1
        return self._heading_paths[i] if i >= 0 else ()

    def raw_span(self, start: int, end: int) -> tuple[int, int] | None:
        """``text[start:end]`` as a range of the file's decoded text (text formats only)."""
        if self.raw_offsets is None:
            return None
        if end <= start:
            at = int(self.raw_offsets[start])
            return at, at
        return int(self.raw_offsets[start]), int(self.raw_offsets[end - 1]) + 1

    def _index_headings(self) -> None:
        starts: list[int] = []
        paths: list[tuple[str, ...]] = []
        stack: list[tuple[int, str]] = []
        for block in self.blocks:
            if block.kind != "heading":
                continue
            title = " ".join(self.text[block.start : block.end].split()).lstrip("#").strip()
            while stack and stack[-1][0] >= block.level:
                stack.pop()
            stack.append((block.level, title))
            starts.append(block.start)
            paths.append(tuple(t for _, t in stack))
        self._heading_starts, self._heading_paths = starts, paths


@dataclass(frozen=True)
class Chunk:
    """A piece of a document for retrieval: ``text == document.text[start:end]``.

    ``doc`` is the document's index in the collection the chunk was made from, ``index`` the
    chunk's position among that document's chunks. ``section`` is the heading path where the
    chunk starts, ``page`` its first page (``None`` without pages), ``kind`` the kind of the
    block it comes from when it is one whole list, table, code block or asset placeholder
    (``"text"`` otherwise), ``assets`` the indices in ``document.assets`` of the figures and
    clips whose placeholders it holds. ``n_tokens`` counts the chunker's tokens.
    """

    text: str
    source: str
    start: int
    end: int
    doc: int = 0
    index: int = 0
    page: int | None = None
    section: tuple[str, ...] = ()
    kind: str = "text"
    n_tokens: int = 0
    assets: tuple[int, ...] = ()

    @property
    def heading(self) -> str:
        """The section path as one line (``Experiments > Results``); empty when none."""
        return " > ".join(self.section)

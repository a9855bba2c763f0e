"""Reading documents from files: plain text, Markdown, HTML, PDF and multimodal JSONL.

``load_document(path)`` picks the reader by the file's suffix (or by its first bytes for an
unknown suffix) and returns a cleaned :class:`~longmm.reading.document.Document`. Bad input
gets a :class:`~longmm.errors.DataError` that names the file and what is wrong with it:
missing, empty, binary, garbled, or longer than ``max_chars``.

Multimodal JSONL: one JSON object a line, in reading order, each one of
``{"text": "..."}`` (a paragraph; blank lines inside split it), ``{"heading": "...",
"level": 1}``, ``{"image": "fig12.png", "caption": "...", "label": "Figure 12"}`` or
``{"audio": "clip.wav", "caption": "...", "label": "Clip 3"}`` (paths relative to the JSONL
file), or ``{"page": 2}`` (a new page starts here). Extra keys of figures and clips go to
``Asset.meta``. Each figure and clip gets a placeholder line ``[Figure 12: caption]`` in the
text, so that it is retrieved and cited where it stands.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import unicodedata
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from longmm.errors import DataError
from longmm.reading.document import Asset, Block, Document
from longmm.reading.enhance import clean_text, text_blocks

DEFAULT_MAX_CHARS = 40_000_000  # about 8M tokens of English
TEXT_SUFFIXES = {".txt", ".text", ".rst", ".log", ".csv", ".tsv"}
MARKDOWN_SUFFIXES = {".md", ".markdown"}
HTML_SUFFIXES = {".html", ".htm", ".xhtml"}
PDF_SUFFIXES = {".pdf"}
JSONL_SUFFIXES = {".jsonl"}
SUPPORTED = TEXT_SUFFIXES | MARKDOWN_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES | JSONL_SUFFIXES
# Formats longmm does not read: refused by name rather than read as text.
UNSUPPORTED = {".docx", ".doc", ".odt", ".rtf", ".pptx", ".ppt", ".odp", ".xlsx", ".xls", ".epub"}


def load_documents(
    paths: Iterable[str | Path], *, max_chars: int = DEFAULT_MAX_CHARS
) -> list[Document]:
    """Documents from files and folders (a folder gives its supported files, sorted)."""
    docs: list[Document] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            files = sorted(
                f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in SUPPORTED
            )
            if not files:
                raise DataError(str(path), f"no documents in this folder ({_supported()})")
            docs.extend(load_document(f, max_chars=max_chars) for f in files)
        else:
            docs.append(load_document(path, max_chars=max_chars))
    return docs


def load_document(path: str | Path, *, max_chars: int = DEFAULT_MAX_CHARS) -> Document:
    """One document from a file, by suffix: txt, md, html, pdf or multimodal jsonl."""
    path = Path(path)
    where = str(path)
    if not path.exists():
        raise DataError(where, "no such file")
    if not path.is_file():
        raise DataError(where, "not a file")
    data = path.read_bytes()
    if not data.strip():
        raise DataError(where, "empty document (no text)")
    suffix = path.suffix.lower()
    if suffix in UNSUPPORTED:
        raise DataError(
            where, f"{suffix} files are not supported; longmm reads {_supported()} (save it as PDF)"
        )
    if suffix in PDF_SUFFIXES or (suffix not in SUPPORTED and data.startswith(b"%PDF-")):
        return pdf_document(data, where, max_chars=max_chars)
    text = decode_text(data, where)
    if suffix in HTML_SUFFIXES or (
        suffix not in SUPPORTED and re.match(r"\s*(<!doctype html|<html)", text[:1000], re.I)
    ):
        return html_document(text, where, max_chars=max_chars)
    if suffix in JSONL_SUFFIXES:
        return jsonl_document(text, where, base=path.parent, max_chars=max_chars)
    return text_document(text, where, markdown=suffix in MARKDOWN_SUFFIXES, max_chars=max_chars)


def _supported() -> str:
    return ", ".join(sorted(s.lstrip(".") for s in SUPPORTED))


# -- checks ------------------------------------------------------------------------------------


def decode_text(data: bytes, where: str) -> str:
    """UTF-8 (with or without BOM), UTF-16 with a BOM, or Windows-1252 for old text files;
    binary data is refused."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise DataError(where, f"not valid UTF-16 text (bad bytes at {exc.start})") from exc
    nul = data.find(b"\x00")
    if nul >= 0:
        raise DataError(where, f"binary data, not a text document (a NUL byte at byte {nul})")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        try:
            text = data.decode("cp1252")
        except UnicodeDecodeError:
            raise DataError(
                where, f"binary data, not a text document (not UTF-8 at byte {exc.start})"
            ) from exc
        controls = sum(1 for ch in text if ch < " " and ch not in "\n\r\t\f")
        if controls > 0.001 * len(text):
            raise DataError(
                where, f"binary data, not a text document (not UTF-8 at byte {exc.start})"
            ) from exc
        return text


def check_readable(text: str, where: str, max_chars: int) -> None:
    """Refuse text that is empty, too long, or garbled (mostly not letters, or full of
    replacement characters from a wrong decoding)."""
    if len(text) > max_chars:
        raise DataError(
            where,
            f"document too long: {len(text):,} characters, over the limit of {max_chars:,} "
            "(raise the limit to read it: --max-chars, or max_chars in Python)",
        )
    visible = [ch for ch in text[:200_000] if not ch.isspace()]
    if not visible:
        raise DataError(where, "empty document (no text)")
    bad = sum(
        1 for ch in visible if ch == "\ufffd" or unicodedata.category(ch) in ("Cc", "Co", "Cs")
    )
    if bad > max(2, 0.01 * len(visible)):
        raise DataError(
            where, f"garbled text: {bad} of {len(visible)} characters are undecodable or control"
        )
    letters = sum(1 for ch in visible if ch.isalnum())
    if len(visible) >= 20 and letters < 0.5 * len(visible):
        raise DataError(
            where,
            f"garbled text: only {100 * letters / len(visible):.0f}% of the characters are "
            "letters or digits (is this a text document?)",
        )


# -- formats -----------------------------------------------------------------------------------


def text_document(
    text: str,
    source: str = "<text>",
    *,
    markdown: bool = False,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> Document:
    """A document from plain text or Markdown (cleaned; offsets back to ``text`` kept)."""
    check_readable(text, source, max_chars)
    clean, offsets = clean_text(text)
    if not clean:
        raise DataError(source, "empty document (no text)")
    return Document(
        text=clean,
        source=source,
        blocks=text_blocks(clean, markdown=markdown),
        raw_offsets=offsets,
        meta={"format": "markdown" if markdown else "text"},
    )


def _assemble(
    parts: Sequence[tuple[str, str, int]],
    source: str,
    fmt: str,
    *,
    assets: Sequence[tuple[int, Asset]] = (),
    page_parts: Sequence[int] = (),
    max_chars: int,
) -> Document:
    """Join block texts ``(kind, text, level)`` with blank lines, clean the whole, and map the
    block, page and asset offsets through the cleaning. ``assets`` pairs a part index with
    its asset; ``page_parts`` lists the part index where each page starts."""
    pieces: list[str] = []
    spans: list[tuple[int, int]] = []
    pos = 0
    for _, text, _ in parts:
        if pieces:
            pieces.append("\n\n")
            pos += 2
        pieces.append(text)
        spans.append((pos, pos + len(text)))
        pos += len(text)
    joined = "".join(pieces)
    check_readable(joined, source, max_chars)
    clean, offsets = clean_text(joined, unwrap=False)
    if not clean:
        raise DataError(source, "empty document (no text)")

    def to_clean(at: int) -> int:
        return int(np.searchsorted(offsets, at, side="left"))

    blocks: list[Block] = []
    clean_spans: list[tuple[int, int]] = []
    for (kind, _, level), (s, e) in zip(parts, spans, strict=True):
        cs, ce = to_clean(s), to_clean(e)
        while cs < ce and clean[cs].isspace():
            cs += 1
        while ce > cs and clean[ce - 1].isspace():
            ce -= 1
        clean_spans.append((cs, ce))
        if ce > cs:
            blocks.append(Block(kind, cs, ce, level))  # type: ignore[arg-type]
    placed = []
    for part, asset in assets:
        cs, ce = clean_spans[part]
        placed.append(Asset(asset.kind, asset.path, cs, ce, asset.caption, asset.label, asset.meta))
    page_starts = sorted({clean_spans[p][0] for p in page_parts if p < len(clean_spans)})
    if page_starts:
        page_starts[0] = 0
    return Document(
        text=clean,
        source=source,
        blocks=blocks,
        page_starts=page_starts,
        assets=placed,
        meta={"format": fmt},
    )


# HTML ----------------------------------------------------------------------------------------

_DROP_TAGS = (
    "script, style, noscript, template, svg, canvas, iframe, object, form, button, select, "
    "nav, header, footer, aside, menu, dialog, head"
)
_BOILERPLATE = re.compile(
    r"(^|[-_ ])(nav|navbar|menu|footer|header|sidebar|breadcrumbs?|cookie|banner|advert|ads|"
    r"share|social|related|comments?|skip|toc)([-_ ]|$)",
    re.I,
)
# Never dropped for a class or id: the page itself, headings, and inline text (mdBook marks
# every heading's anchor link class="header"; a menu's links go with their container).
_KEEP_MARKED = frozenset(
    {"body", "main", "article", "html", "h1", "h2", "h3", "h4", "h5", "h6", "a", "span", "code"}
)
_BLOCK_TAGS = {
    "p", "div", "section", "article", "main", "body", "blockquote", "pre", "figure",
    "figcaption", "dl", "dt", "dd", "address", "details", "summary", "center", "li", "td",
    "th", "caption", "hr", "table", "ul", "ol",
}  # fmt: skip
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_WS = re.compile(r"\s+")
_INLINE_WS = re.compile(r"[^\S\n]+")
_LINE_WS = re.compile(r" ?\n[\s]*")


def html_document(
    html: str, source: str = "<html>", *, max_chars: int = DEFAULT_MAX_CHARS
) -> Document:
    """Readable text of an HTML page: scripts, styles, navigation, headers, footers, forms and
    blocks marked as menus, ads or cookie banners dropped; the ``<main>`` or ``<article>``
    when the page has one; headings, paragraphs, lists (one ``- item`` a line) and tables
    (``cell | cell`` a row) as blocks."""
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(html)
    for node in tree.css(_DROP_TAGS):
        node.decompose()
    for node in tree.css("[class], [id], [role]"):
        attrs = node.attributes
        marks = " ".join(str(attrs.get(k) or "") for k in ("class", "id", "role"))
        if node.tag not in _KEEP_MARKED and _BOILERPLATE.search(marks):
            node.decompose()
    root = tree.css_first("main") or tree.css_first("article") or tree.body or tree.root
    parts: list[tuple[str, str, int]] = []
    if root is not None:
        _html_blocks(root, parts)
    if not parts:
        raise DataError(source, "empty document (no readable text in the HTML)")
    return _assemble(parts, source, "html", max_chars=max_chars)


def _html_blocks(node, parts: list[tuple[str, str, int]]) -> None:
    inline: list[str] = []

    def flush() -> None:
        # Spaces collapse; line breaks from <br> stay.
        text = _LINE_WS.sub("\n", _INLINE_WS.sub(" ", "".join(inline))).strip()
        inline.clear()
        if text:
            parts.append(("paragraph", text, 0))

    for child in node.iter(include_text=True):
        tag = child.tag
        if tag == "-text":
            inline.append(child.text(deep=False) or "")
        elif tag == "br":
            inline.append("\n")
        elif tag in _HEADINGS:
            flush()
            title = _WS.sub(" ", child.text(deep=True, separator=" ")).strip()
            if title:
                parts.append(("heading", title, _HEADINGS[tag]))
        elif tag in ("ul", "ol"):
            flush()
            lines = _list_lines(child, 0)
            if lines:
                parts.append(("list", "\n".join(lines), 0))
        elif tag == "table":
            flush()
            rows = _table_rows(child)
            if rows:
                parts.append(("table", "\n".join(rows), 0))
        elif tag == "pre":
            flush()
            code = (child.text(deep=True) or "").strip("\n")
            if code.strip():
                parts.append(("code", code, 0))
        elif tag == "img":
            alt = (child.attributes.get("alt") or "").strip()
            if alt:
                inline.append(f" [Image: {alt}] ")
        elif tag in _BLOCK_TAGS:
            flush()
            _html_blocks(child, parts)
        elif tag and not tag.startswith("-"):
            inline.append(child.text(deep=True, separator=""))
    flush()


def _list_lines(node, depth: int) -> list[str]:
    lines: list[str] = []
    for i, li in enumerate(n for n in node.iter() if n.tag == "li"):
        own: list[str] = []
        nested: list[str] = []
        for child in li.iter(include_text=True):
            if child.tag in ("ul", "ol"):
                nested.extend(_list_lines(child, depth + 1))
            elif child.tag == "-text":
                own.append(child.text(deep=False) or "")
            elif child.tag not in ("script", "style"):
                own.append(" " + child.text(deep=True, separator=" ") + " ")
        text = _WS.sub(" ", "".join(own)).strip()
        marker = f"{i + 1}." if node.tag == "ol" else "-"
        if text:
            lines.append("  " * depth + f"{marker} {text}")
        lines.extend(nested)
    return lines


def _table_rows(table) -> list[str]:
    rows = []
    caption = table.css_first("caption")
    if caption is not None:
        text = _WS.sub(" ", caption.text(deep=True, separator=" ")).strip()
        if text:
            rows.append(f"Table: {text}")
    for tr in table.css("tr"):
        cells = [_WS.sub(" ", c.text(deep=True, separator=" ")).strip() for c in tr.css("th, td")]
        if any(cells):
            rows.append(" | ".join(cells))
    return rows


# PDF -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_pypdf() -> Iterator[None]:
    """pypdf's own logging and warnings off while it reads: a file it cannot read gets one
    clear error from us, and the fixes it makes in passing to a readable file are its own
    business."""
    logger = logging.getLogger("pypdf")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def pdf_document(
    data: bytes, source: str = "<pdf>", *, max_chars: int = DEFAULT_MAX_CHARS
) -> Document:
    """Text of a PDF, page by page (pypdf), with lines repeated at the top or bottom of most
    pages (running headers, footers, page numbers) removed. Scanned PDFs without a text layer
    and encrypted ones get a clear error."""
    import io

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        with _quiet_pypdf():  # its warnings about a broken file come before our error
            reader = PdfReader(io.BytesIO(data))
            if reader.is_encrypted and not reader.decrypt(""):
                raise DataError(source, "the PDF is encrypted (a password is needed to read it)")
            pages = [page.extract_text() or "" for page in reader.pages]
    except DataError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise DataError(source, f"not a readable PDF ({type(exc).__name__}: {exc})") from exc
    if not pages:
        raise DataError(source, "the PDF has no pages")
    if not any(p.strip() for p in pages):
        raise DataError(
            source, f"no text in the PDF's {len(pages)} pages (a scan? run OCR on it first)"
        )
    pages = strip_running_lines(pages)
    pieces: list[str] = []
    starts: list[int] = []
    pos = 0
    for text in pages:
        if pieces:
            pieces.append("\n")
            pos += 1
        starts.append(pos)
        pieces.append(text)
        pos += len(text)
    joined = "".join(pieces)
    check_readable(joined, source, max_chars)
    clean, offsets = clean_text(joined)
    if not clean:
        raise DataError(source, "empty document (no text)")
    page_starts = [int(np.searchsorted(offsets, s, side="left")) for s in starts]
    page_starts = [min(s, len(clean)) for s in page_starts]
    page_starts[0] = 0
    return Document(
        text=clean,
        source=source,
        blocks=text_blocks(clean),
        page_starts=page_starts,
        meta={"format": "pdf", "pages": len(pages)},
    )


_DIGITS = re.compile(r"\d+")


def strip_running_lines(pages: Sequence[str], edge: int = 2) -> list[str]:
    """Remove lines that repeat (up to their numbers) among the first or last ``edge``
    non-blank lines of at least half of the pages, when there are three pages or more."""
    if len(pages) < 3:
        return list(pages)

    def key(line: str) -> str:
        return _DIGITS.sub("#", " ".join(line.split()).lower())

    counts: Counter[str] = Counter()
    for page in pages:
        lines = [line for line in page.split("\n") if line.strip()]
        counts.update({key(line) for line in lines[:edge] + lines[-edge:]})
    running = {k for k, c in counts.items() if c >= max(3, len(pages) / 2)}
    if not running:
        return list(pages)
    out = []
    for page in pages:
        lines = page.split("\n")
        real = [i for i, line in enumerate(lines) if line.strip()]
        edges = set(real[:edge] + real[-edge:])
        out.append(
            "\n".join(
                line for i, line in enumerate(lines) if not (i in edges and key(line) in running)
            )
        )
    return out


# multimodal JSONL ----------------------------------------------------------------------------


def jsonl_document(
    text: str,
    source: str = "<jsonl>",
    *,
    base: Path | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> Document:
    """A multimodal document from JSON Lines (see the module docstring for the format)."""
    base = base or Path(".")
    parts: list[tuple[str, str, int]] = []
    assets: list[tuple[int, Asset]] = []
    page_parts: list[int] = []
    counts = {"image": 0, "audio": 0}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{source}:{n}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(where, f"not valid JSON ({exc.msg})") from exc
        if not isinstance(item, dict):
            raise DataError(where, f"expected a JSON object, got {type(item).__name__}")
        keys = [k for k in ("text", "heading", "image", "audio", "page") if k in item]
        if len(keys) != 1:
            raise DataError(
                where, "each line needs exactly one of 'text', 'heading', 'image', 'audio', 'page'"
            )
        key = keys[0]
        value = item[key]
        if key == "page":
            page_parts.append(len(parts))
            continue
        if key in ("text", "heading") and not isinstance(value, str):
            raise DataError(where, f"'{key}' must be a string")
        if key == "text":
            for para in re.split(r"\n\s*\n", value):
                if para.strip():
                    parts.append(("paragraph", para.strip(), 0))
        elif key == "heading":
            level = item.get("level", 1)
            if not isinstance(level, int) or not 1 <= level <= 6:
                raise DataError(where, f"'level' must be an integer 1-6, got {level!r}")
            parts.append(("heading", value.strip(), level))
        else:
            if not isinstance(value, str) or not value:
                raise DataError(where, f"'{key}' must be a file path")
            path = (base / value).resolve()
            if not path.is_file():
                raise DataError(where, f"{key} file not found: {path}")
            counts[key] += 1
            label = str(
                item.get("label") or f"{'Figure' if key == 'image' else 'Audio clip'} {counts[key]}"
            )
            caption = str(item.get("caption") or "")
            placeholder = f"[{label}: {caption}]" if caption else f"[{label}]"
            meta = {k: v for k, v in item.items() if k not in (key, "label", "caption")}
            assets.append((len(parts), Asset(key, str(path), 0, 0, caption, label, meta)))  # type: ignore[arg-type]
            parts.append((key, placeholder, 0))
    if page_parts and page_parts[0] != 0:
        page_parts.insert(0, 0)
    if not parts:
        raise DataError(source, "empty document (no text, heading, image or audio lines)")
    return _assemble(
        parts, source, "jsonl", assets=assets, page_parts=page_parts, max_chars=max_chars
    )

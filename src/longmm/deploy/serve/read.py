"""``POST /read``: a question about a long document, answered by ``longmm.reading``'s
retrieval reader with its evidence passages and their offsets in the document's text.

The document comes as an upload (``document``: txt, md, html or pdf, read by its file name's
suffix like ``longmm read`` does) or as ``text``. Its token count (MiniLM WordPiece, what the
reader reads) is checked against ``Limits.max_document_tokens`` piece by piece, before
anything is indexed: an oversized document is refused once the count passes the limit, never
tokenized whole. A document its parser cannot read (encrypted, nested too deep, a
decompression bomb, a broken file) is a 422 naming the reason; a missing optional dependency
(e.g. ``cryptography`` for AES-encrypted PDFs) is a 422 naming it.

In the HTTP server, :class:`ReadGate` bounds the reads: at most ``max_concurrent_reads`` at
once (more get 503 with ``Retry-After``) and a wall time (past it a 504; the slot stays taken
until the work really ends, so the bound holds).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from longmm.deploy.runfolder import InputError, Limits
from longmm.deploy.serve.inputs import decode_base64
from longmm.errors import DataError

DOCUMENT_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf")
MAX_TOP_K = 20
# The document's text comes back for highlighting only when it is at most this long.
MAX_ECHO_CHARS = 500_000
# Tokens are counted this many characters at a time (cut at a space): memory stays bounded.
COUNT_PIECE_CHARS = 200_000
RETRY_AFTER_S = 5
# A document may hold at most this many characters per token of the token limit (English
# has 4-5): a bound on what a parser extracts before the tokens are counted.
CHARS_PER_TOKEN = 10

# HTML nested deeper than this is refused before it is parsed (parsers and tree walks recurse
# or slow down with depth: 100k nested tags took over a minute). Elements that close
# themselves (void ones) or may be left open (p, li, td, ...) are not counted.
MAX_HTML_DEPTH = 1000
_TAG = re.compile(rb"<(/?)([a-zA-Z][a-zA-Z0-9]*)[^>]*?(/?)>")
_UNCOUNTED = frozenset(
    b"area base br col embed hr img input link meta param source track wbr p li dt dd tr td th "
    b"option optgroup thead tbody tfoot colgroup caption rb rt rp".split()
)

logger = logging.getLogger(__name__)


def reader_available() -> bool:
    """Whether this installation has the long-document reader (``longmm.reading``)."""
    try:
        from longmm.reading.reader import RetrievalReader  # noqa: F401
    except ImportError:
        return False
    return True


@cache
def reader(strategy: str, top_k: int) -> Any:
    from longmm.reading.pipeline import build_reader

    return build_reader(strategy=strategy, top_k=top_k)  # type: ignore[arg-type]


def _document(fields: dict[str, Any], max_chars: int) -> Any:
    """The document of a request, its characters checked while it is read (``max_chars``)."""
    from longmm.reading.ingest import load_document, text_document

    data, text = fields.get("document"), fields.get("text")
    if data is not None and text is not None:
        raise InputError("document", "give a document upload or text, not both")
    if text is not None:
        if not isinstance(text, str) or not text.strip():
            raise InputError("text", "must be a non-empty string")
        try:
            return text_document(text, "<text>", max_chars=max_chars)
        except DataError as err:
            raise InputError("text", err.reason) from err
    if data is None:
        raise InputError("document", "give a document (an upload) or its text")
    if isinstance(data, str):  # JSON: base64
        data = decode_base64("document", data)
    name = str(fields.get("filename") or "document.txt")
    suffix = Path(name).suffix.lower()
    if suffix not in DOCUMENT_SUFFIXES:
        raise InputError("filename", f"{suffix or 'no suffix'}: not one of {DOCUMENT_SUFFIXES}")
    if suffix in (".html", ".htm"):
        check_html_depth(data)
    fd, tmp = tempfile.mkstemp(suffix=suffix, prefix="longmm-read-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        doc = _load(lambda path: load_document(path, max_chars=max_chars), tmp)
    finally:
        os.unlink(tmp)
    doc.source = name
    return doc


def _load(load_document: Callable[[str], Any], path: str) -> Any:
    """The parsed document; whatever its parser refuses is the client's file, not a fault
    of the server (a 422 naming the reason)."""
    try:
        return load_document(path)
    except DataError as err:
        raise InputError("document", err.reason) from err
    except RecursionError as err:
        raise InputError("document", "nested too deep to read") from err
    except (ImportError, ModuleNotFoundError) as err:
        raise InputError("document", f"needs an optional dependency: {err}") from err
    except MemoryError as err:
        raise InputError("document", "too large once decompressed", 413) from err
    except Exception as err:  # any parser failure (pypdf, selectolax, ...)
        reason = getattr(err, "args", [""])[0] if err.args else ""
        if "cryptography" in str(reason) or "AES" in str(reason):
            raise InputError(
                "document", f"needs the optional dependency 'cryptography': {reason}"
            ) from err
        raise InputError("document", f"not readable ({type(err).__name__}: {reason})") from err


def check_html_depth(data: bytes, limit: int = MAX_HTML_DEPTH) -> None:
    depth = 0
    for closing, name, self_closing in _TAG.findall(data):
        if self_closing or name.lower() in _UNCOUNTED:
            continue
        depth = max(0, depth - 1) if closing else depth + 1
        if depth > limit:
            raise InputError("document", f"HTML nested over {limit} elements deep")


def count_tokens(counter: Any, text: str, limit: int) -> int:
    """WordPiece tokens in ``text``, counted a piece at a time (cut at whitespace, where
    WordPiece never joins tokens); a 413 as soon as the count passes ``limit``."""
    total, start = 0, 0
    while start < len(text):
        end = min(len(text), start + COUNT_PIECE_CHARS)
        if end < len(text):
            space = text.rfind(" ", start, end)
            end = space + 1 if space > start else end
        total += len(counter.token_starts([text[start:end]])[0])
        if total > limit:
            raise InputError(
                "document", f"over the limit of {limit} tokens (counted to {total})", 413
            )
        start = end
    return total


def answer(fields: dict[str, Any], limits: Limits, strategy: str = "hybrid") -> dict[str, Any]:
    """The reader's answer as JSON, plus ``document_text`` (the text offsets point into) when
    the request asks for it with ``include_text`` (and the text is at most
    ``MAX_ECHO_CHARS``)."""
    question = fields.get("question")
    if not isinstance(question, str) or not question.strip():
        raise InputError("question", "must be a non-empty string")
    top_k = fields.get("top_k", 3)
    try:
        top_k = int(top_k)
    except (TypeError, ValueError) as err:
        raise InputError("top_k", f"must be an integer, got {top_k!r}") from err
    if not 1 <= top_k <= MAX_TOP_K:
        raise InputError("top_k", f"must be in 1..{MAX_TOP_K}, got {top_k}")
    doc = _document(fields, limits.max_document_tokens * CHARS_PER_TOKEN)
    the_reader = reader(strategy, top_k)
    tokens = count_tokens(the_reader.chunker.counter, doc.text, limits.max_document_tokens)
    try:
        result = the_reader.answer(question, doc)
    except DataError as err:
        field = "question" if err.where == "question" else "document"
        raise InputError(field, err.reason) from err
    out = result.to_json()
    out["document"] = {"source": doc.source, "chars": len(doc.text), "tokens": tokens}
    if _flag(fields.get("include_text"), "include_text") and len(doc.text) <= MAX_ECHO_CHARS:
        out["document_text"] = doc.text
    return out


def _flag(value: Any, field: str) -> bool:
    """A boolean form or JSON field (absent: false)."""
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("", "0", "false", "no", "off"):
        return False
    raise InputError(field, f"must be true or false, got {value!r}")


class ReadGate:
    """At most ``slots`` reads at once in this HTTP server, each bounded in wall time."""

    def __init__(self, slots: int, timeout_s: float) -> None:
        self.slots = asyncio.Semaphore(slots)
        self.timeout_s = timeout_s

    def busy(self) -> bool:
        return self.slots.locked()

    def refuse(self) -> InputError:
        err = InputError("endpoint", "busy with other documents; retry later", 503)
        err.headers = {"Retry-After": str(RETRY_AFTER_S)}  # type: ignore[attr-defined]
        return err

    async def run(self, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """``work()`` in a thread; the slot is freed when it ends, not when the client
        gives up (a thread cannot be stopped: the bound must count it till its end)."""
        if self.slots.locked():
            raise self.refuse()
        await self.slots.acquire()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, work)
        future.add_done_callback(lambda _: self.slots.release())
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.timeout_s)
        except TimeoutError as err:
            logger.warning("a /read passed %g s; answered 504", self.timeout_s)
            raise InputError("request", f"took over {self.timeout_s:g} s", 504) from err

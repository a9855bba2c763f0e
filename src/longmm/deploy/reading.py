"""``POST /read``: a question about a long document, answered by ``longmm.reading``'s
retrieval reader with its evidence passages and their offsets in the document's text.

The document comes as an upload (``document``: txt, md, html or pdf, read by its file name's
suffix like ``longmm read`` does) or as ``text``. Its token count (MiniLM WordPiece, what the
reader reads) is checked against ``Limits.max_document_tokens`` before anything is indexed.
"""

from __future__ import annotations

import os
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

from longmm.deploy.runfolder import InputError, Limits
from longmm.errors import DataError

DOCUMENT_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf")
MAX_TOP_K = 20
# The document's text comes back for highlighting only when it is at most this long.
MAX_ECHO_CHARS = 500_000


@cache
def reader(strategy: str, top_k: int) -> Any:
    from longmm.reading.pipeline import build_reader

    return build_reader(strategy=strategy, top_k=top_k)  # type: ignore[arg-type]


def _document(fields: dict[str, Any]) -> Any:
    from longmm.reading.ingest import load_document, text_document

    data, text = fields.get("document"), fields.get("text")
    if data is not None and text is not None:
        raise InputError("document", "give a document upload or text, not both")
    if text is not None:
        if not isinstance(text, str) or not text.strip():
            raise InputError("text", "must be a non-empty string")
        try:
            return text_document(text, "<text>")
        except DataError as err:
            raise InputError("text", err.reason) from err
    if data is None:
        raise InputError("document", "give a document (an upload) or its text")
    if isinstance(data, str):  # JSON: base64
        from longmm.deploy.serve import _decode_base64

        data = _decode_base64("document", data)
    name = str(fields.get("filename") or "document.txt")
    suffix = Path(name).suffix.lower()
    if suffix not in DOCUMENT_SUFFIXES:
        raise InputError("filename", f"{suffix or 'no suffix'}: not one of {DOCUMENT_SUFFIXES}")
    fd, tmp = tempfile.mkstemp(suffix=suffix, prefix="longmm-read-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        try:
            doc = load_document(tmp)
        except DataError as err:
            raise InputError("document", err.reason) from err
    finally:
        os.unlink(tmp)
    doc.source = name
    return doc


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
    doc = _document(fields)
    the_reader = reader(strategy, top_k)
    tokens = len(the_reader.chunker.counter.token_starts([doc.text])[0])
    if tokens > limits.max_document_tokens:
        raise InputError(
            "document",
            f"{tokens} tokens, over the limit of {limits.max_document_tokens}",
            status=413,
        )
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

"""Text that is not content: reference lists, "Retrieved ..." and "Jump up ^" lines, page
furniture ("From Wikipedia, the free encyclopedia", "Jump to navigation"), and inline
citation markers (``[12]``, ``[citation needed]``).

The reader keeps such chunks in the document (offsets stay exact) but ranks them after
every other chunk, and strips citation markers from what retrieval reads, so that a
sentence's ``[3]`` neither matches a question about "3" nor splits its words.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

REFERENCE_HEADINGS = frozenset(
    {
        "references",
        "bibliography",
        "notes",
        "citations",
        "footnotes",
        "sources",
        "works cited",
        "external links",
        "further reading",
        "see also",
        "notes and references",
        "references and notes",
    }
)
_FURNITURE = re.compile(
    r"^\s*(?:\^|↑|jump up\b|retrieved\b|archived from\b|archived (?:at|on)\b|from wikipedia\b"
    r"|jump to (?:navigation|search|content)|skip to (?:main )?content|this page was last "
    r"(?:edited|modified)|wikimedia commons has|all rights reserved|copyright ©|cite this page"
    r"|doi:|isbn\b|pmid\b|\[?\d{1,3}\]?\.?\s+[A-Z][\w'-]+,\s+(?:[A-Z]\.\s?)+)",
    re.IGNORECASE,
)
_RETRIEVED = re.compile(r"\bRetrieved\s+(?:on\s+)?\d|\bRetrieved\s+\w+\s+\d{1,2},\s+\d{4}")
CITATION_MARKER = re.compile(r"\[(?:\d{1,3}(?:[,–-]\s*\d{1,3})*|[a-z]|citation needed|note \d+)\]")


def is_reference_section(section: Sequence[str]) -> bool:
    """Whether the heading path ends in a reference-like section (References, Notes, ...)."""
    if not section:
        return False
    last = re.sub(r"^[\d.\s]+", "", section[-1]).strip().strip(":").lower()
    return last in REFERENCE_HEADINGS


def is_boilerplate(text: str, section: Sequence[str] = ()) -> bool:
    """A chunk of reference list or page furniture: in a reference section, or at least
    half of its lines look like furniture or citations, or it cites "Retrieved <date>"
    twice or more."""
    if is_reference_section(section):
        return True
    lines = [line for line in text.split("\n") if line.strip()]
    if not lines:
        return False
    furniture = sum(bool(_FURNITURE.match(line)) for line in lines)
    return furniture * 2 >= len(lines) or len(_RETRIEVED.findall(text)) >= 2


def strip_citations(text: str) -> str:
    """``text`` without inline citation markers (for ranking only)."""
    return CITATION_MARKER.sub(" ", text)

"""Sentences of cleaned text, with their character spans: sentence ends (not after
abbreviations, initials or decimals), and line breaks that end a sentence or were wrapped
inside one."""

from __future__ import annotations

import re

LIST_ITEM = re.compile(r"\s*(?:[-*+•·▪◦‣]|\d{1,3}[.)]|[a-zA-Z][.)]|\(\w{1,3}\))\s+\S")
MD_HEADING = re.compile(r"(#{1,6})\s+\S")


ABBREVIATIONS = frozenset(
    [
        "al",
        "approx",
        "apr",
        "aug",
        "ca",
        "cf",
        "co",
        "corp",
        "dec",
        "dept",
        "dr",
        "e.g",
        "eq",
        "eqs",
        "etc",
        "feb",
        "fig",
        "figs",
        "i.e",
        "inc",
        "jan",
        "jr",
        "jul",
        "jun",
        "ltd",
        "mar",
        "mr",
        "mrs",
        "ms",
        "mt",
        "no",
        "nos",
        "nov",
        "oct",
        "pp",
        "prof",
        "ref",
        "refs",
        "sec",
        "sect",
        "sep",
        "sept",
        "sr",
        "st",
        "tab",
        "vol",
        "vs",
        "viz",
        "e.g",
        "i.e",
        "u.s",
    ]
)
_BOUNDARY = re.compile(
    r"""(?:[.!?]+|\.\.\.|…)["'”’)\]]*(?=\s+["'“‘(\[]?[A-Z0-9\u00c0-\u024f])"""
    r"""|(?<=[a-z]{2})[.!?](?=[A-Z][a-z])"""
    r"""|[.!?]["'”’)\]]*(?=\s+[-•*]\s)"""
)
_WORD_BEFORE = re.compile(r"([\w.]+)$")


def split_sentences(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Sentence spans ``(start, end)`` in ``text[start:end]``, without surrounding spaces.

    A sentence ends at ``.``, ``!`` or ``?`` (and closing quotes or brackets) before a space and
    a capital, digit or opening quote, or glued to the next capitalised word. Not after
    abbreviations (``e.g.``, ``Fig.``, ``et al.``), single initials or decimal numbers. A line
    break ends a sentence unless the line was wrapped inside it (:func:`continues_line`:
    "The default weight value is" followed by "50 for new users." is one sentence).
    """
    end = len(text) if end is None else end
    spans: list[tuple[int, int]] = []
    pos = start
    seg = start  # where the current run of wrapped lines began
    while pos < end:
        nl = text.find("\n", pos, end)
        line_end = end if nl < 0 else nl
        if nl < 0 or not continues_line(text, pos, line_end, end):
            _line_sentences(text, seg, line_end, spans)
            seg = line_end + 1
        pos = line_end + 1
    return spans


# Words a sentence does not end on: a line that ends on one was wrapped mid-sentence.
_OPEN_ENDINGS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "from",
        "with",
        "and",
        "or",
        "but",
        "nor",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "has",
        "have",
        "had",
        "will",
        "would",
        "shall",
        "should",
        "can",
        "could",
        "may",
        "might",
        "must",
        "than",
        "that",
        "which",
        "who",
        "whose",
        "whom",
        "as",
        "into",
        "onto",
        "over",
        "under",
        "between",
        "about",
        "per",
        "via",
        "its",
        "their",
        "our",
        "your",
        "his",
        "her",
        "this",
        "these",
        "those",
        "not",
        "no",
        "if",
        "when",
        "where",
        "while",
        "because",
    ]
)


def continues_line(text: str, start: int, line_end: int, end: int) -> bool:
    """Whether the line ``text[start:line_end]`` was wrapped inside a sentence that goes on in
    the next line: it does not end in sentence or clause punctuation, the next line is not
    blank, a list item, a heading, a table row or code, and either the next line starts in
    lower case or with a digit, or this line ends on a word no sentence ends on."""
    line = text[start:line_end].rstrip()
    nxt_end = text.find("\n", line_end + 1, end)
    nxt = text[line_end + 1 : end if nxt_end < 0 else nxt_end]
    head = nxt.lstrip()
    if not line or not head or line[-1] in ".!?:;|`>)]}\"'”’" or len(line) > 400:
        return False
    if LIST_ITEM.match(nxt) or MD_HEADING.match(nxt) or head[0] in "#|`>*-•=":
        return False
    if head[0].islower() or head[0].isdigit():
        return True
    last = line.rsplit(None, 1)[-1].lower()
    return last in _OPEN_ENDINGS


def _line_sentences(text: str, start: int, end: int, out: list[tuple[int, int]]) -> None:
    line = text[start:end]
    cur = 0
    for m in _BOUNDARY.finditer(line):
        stop = m.end()
        if m[0].startswith(".") and len(m[0].rstrip("\"'”’)]")) == 1:
            word = _WORD_BEFORE.search(line, max(0, m.start() - 32), m.start())
            w = word.group(1).lower().rstrip(".") if word else ""
            if w in ABBREVIATIONS or (len(w) == 1 and w.isalpha()):
                continue
        _emit(text, start + cur, start + stop, out)
        cur = stop
    _emit(text, start + cur, end, out)


def _emit(text: str, s: int, e: int, out: list[tuple[int, int]]) -> None:
    while s < e and text[s].isspace():
        s += 1
    while e > s and text[e - 1].isspace():
        e -= 1
    if e > s:
        out.append((s, e))

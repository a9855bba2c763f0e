"""Cleaning, structure, sentences and chunks: every chunk cites its exact source text."""

from __future__ import annotations

import itertools
import unicodedata

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from longmm.reading import Chunker, clean_text, split_sentences, text_document
from longmm.reading.enhance import WordCounter, WordPieceCounter, text_blocks

WORDS = ["alpha", "beta", "gamma", "Delta", "model", "data", "e.g.", "Fig.", "3.5", "x", "Q"]


@st.composite
def documents(draw: st.DrawFn) -> str:
    """Plain text or Markdown-ish documents: headings, paragraphs of sentences, list items,
    table rows, with irregular spaces, tabs and blank lines."""
    blocks = []
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["para", "para", "heading", "md", "list", "table", "long"]))
        if kind == "heading":
            blocks.append(draw(st.sampled_from(["Introduction", "2.1 Data", "Results and Work"])))
        elif kind == "md":
            blocks.append(
                "#" * draw(st.integers(1, 3)) + " Section " + draw(st.sampled_from("ABC"))
            )
        elif kind == "list":
            n = draw(st.integers(1, 4))
            blocks.append("\n".join(f"- item {i} {draw(st.sampled_from(WORDS))}" for i in range(n)))
        elif kind == "table":
            blocks.append("a | b | c\n1 | 2 | 3\n4 | 5 | 6")
        elif kind == "long":
            blocks.append(
                " ".join(draw(st.sampled_from(WORDS)) for _ in range(draw(st.integers(50, 200))))
            )
        else:
            sentences = []
            for _ in range(draw(st.integers(1, 6))):
                words = draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=14))
                sentences.append(
                    " ".join(words).capitalize() + draw(st.sampled_from([".", "?", "!"]))
                )
            sep = draw(st.sampled_from([" ", "  ", " \t", "\n"]))
            blocks.append(sep.join(sentences))
    joiner = draw(st.sampled_from(["\n\n", "\n", "\n \n\n\n"]))
    lead = draw(st.sampled_from(["", "  ", "\n\n"]))
    return lead + joiner.join(blocks) + draw(st.sampled_from(["", "\n", "  \n"]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=documents(), markdown=st.booleans(), max_tokens=st.integers(8, 40))
def test_every_chunk_maps_back_to_its_exact_source_text(
    raw: str, markdown: bool, max_tokens: int
) -> None:
    doc = text_document(raw, "gen.txt", markdown=markdown)
    chunker = Chunker(max_tokens=max_tokens, overlap_tokens=max_tokens // 4, counter=WordCounter())
    chunks = chunker.chunk(doc)
    assert chunks
    covered = np.zeros(len(doc.text), dtype=bool)
    for i, c in enumerate(chunks):
        assert c.index == i and c.source == "gen.txt"
        assert 0 <= c.start < c.end <= len(doc.text)
        assert c.text == doc.text[c.start : c.end]
        assert c.text == c.text.strip()
        assert c.section == doc.section_at(c.start)
        assert c.n_tokens <= max_tokens
        covered[c.start : c.end] = True
        # Back to the raw input: the same characters, up to whitespace.
        rs, re_ = doc.raw_span(c.start, c.end)
        assert "".join(raw[rs:re_].split()) == "".join(c.text.split())
    # Nothing is lost: every visible character is in some chunk.
    assert all(covered[i] for i, ch in enumerate(doc.text) if not ch.isspace())
    # Chunks never run across a heading.
    for c in chunks:
        inner = [b for b in doc.blocks if b.kind == "heading" and c.start < b.start < c.end]
        assert not inner


def test_chunks_with_wordpiece_tokens_respect_the_limit() -> None:
    text = "\n\n".join(
        [
            "# Methods",
            "We trained the model on 12,000 documents. Each one was read twice. " * 6,
            "## Data",
            "unpunctuated " * 300,
        ]
    )
    doc = text_document(text, markdown=True)
    counter = WordPieceCounter()
    chunks = Chunker(max_tokens=48, overlap_tokens=12, counter=counter).chunk(doc)
    for c in chunks:
        assert c.text == doc.text[c.start : c.end]
        assert len(counter.token_starts([c.text])[0]) <= 48
    assert {c.section for c in chunks} == {("Methods",), ("Methods", "Data")}
    # A sentence that does not fit is cut at word starts, not inside words.
    long = [c for c in chunks if c.section == ("Methods", "Data")]
    assert len(long) > 1 and all(c.text.split()[0] == "unpunctuated" for c in long[1:])


def test_overlap_repeats_the_last_sentences_within_a_paragraph() -> None:
    sentences = [f"Sentence number {i} talks about topic {i}." for i in range(30)]
    doc = text_document(" ".join(sentences))
    chunks = Chunker(max_tokens=40, overlap_tokens=12, counter=WordCounter()).chunk(doc)
    assert len(chunks) > 3
    for a, b in itertools.pairwise(chunks):
        assert b.start < a.end  # overlap
        assert doc.text[b.start : a.end].rstrip(".").startswith("Sentence number")


@settings(max_examples=80, deadline=None)
@given(st.text(alphabet="ab c.\n\t-\u00a0\ufb01\u00ad\u200bé\u0301\r", max_size=120))
def test_clean_text_offsets_point_at_the_characters_kept(raw: str) -> None:
    text, offsets = clean_text(raw)
    assert len(offsets) == len(text) + 1
    assert all(0 <= o <= len(raw) for o in offsets)
    assert all(offsets[i] <= offsets[i + 1] for i in range(len(text) - 1))
    for i, ch in enumerate(text):
        src = raw[offsets[i]]
        composed_from = unicodedata.normalize("NFD", ch)[0] == src  # e + accent -> é
        same = ch == src or (ch == " " and src.isspace()) or composed_from
        assert same or (ch in "fi\n" and src in "\ufb01\r")


def test_cleaning_joins_hyphenation_ligatures_and_hard_wrapped_lines() -> None:
    raw = "\n".join(
        [
            "The experi-",
            "ment was a suf\ufb01cient test of the idea that we describe in this short text,",
            "and its results were   clear to everyone who read the report that followed it.",
            "We wrote a second paragraph of prose that is about as long as the lines above.",
            "Its lines were wrapped at a fixed width by an old editor that people used then.",
            "Everybody knows that such text needs to be unwrapped before a model reads it.",
            "Otherwise each line break would look like the end of a paragraph to a reader.",
            "Short end.",
            "",
            "- a list item stays on its line",
        ]
    )
    text, offsets = clean_text(raw)
    assert text.startswith("The experiment was a sufficient test")
    assert "read the report that followed it. We wrote" in text
    assert "were clear" in text
    assert "Short end.\n\n- a list item" in text
    i = text.index("sufficient")
    assert raw[offsets[i] : offsets[i + 10]].startswith("suf")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "We use BERT, e.g. the base model. It works.",
            ["We use BERT, e.g. the base model.", "It works."],
        ),
        (
            "See Fig. 3 for details. Accuracy is 93.5 percent!",
            ["See Fig. 3 for details.", "Accuracy is 93.5 percent!"],
        ),
        (
            "J. Smith et al. wrote it. Then (later) it grew.",
            ["J. Smith et al. wrote it.", "Then (later) it grew."],
        ),
        ('Is it? "Yes," he said.\nNew line here', ["Is it?", '"Yes," he said.', "New line here"]),
        ("It was accelerating.We stopped it.", ["It was accelerating.", "We stopped it."]),
    ],
)
def test_sentences(text: str, expected: list[str]) -> None:
    assert [text[s:e] for s, e in split_sentences(text)] == expected


def test_plain_text_structure_headings_lists_tables() -> None:
    text = (
        "Introduction\n"
        "This paper studies reading of long documents with many pages of text in them.\n"
        "2.1 Data Collection\n"
        "We collected one hundred documents from the web and cleaned every one of them.\n"
        "1. first step of the method\n2. second step of the method\n"
        "name | size\nA | 10\nB | 20\n"
        "A closing sentence that is a paragraph of its own, long enough to be one."
    )
    blocks = text_blocks(text)
    kinds = [b.kind for b in blocks]
    assert kinds == ["heading", "paragraph", "heading", "paragraph", "list", "table", "paragraph"]
    assert [b.level for b in blocks if b.kind == "heading"] == [1, 2]
    doc = text_document(text)
    assert doc.section_at(text.index("We collected")) == ("Introduction", "2.1 Data Collection")
    assert doc.section_at(0) == ("Introduction",)

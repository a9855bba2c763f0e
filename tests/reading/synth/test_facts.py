"""The generated fact questions the span head trains on: seeded, varied, answers where they
say, real prose around them."""

from __future__ import annotations

from pathlib import Path

import pytest

from longmm.errors import DataError
from longmm.reading.synth.facts import FAMILIES, _fill, load_prose, make_span_examples


def test_examples_are_seeded_varied_and_point_at_their_answers() -> None:
    examples = make_span_examples(200, seed=1)
    assert examples == make_span_examples(200, seed=1)
    assert examples != make_span_examples(200, seed=2)
    assert {x.family for x in examples} == set(FAMILIES)
    assert len({x.question for x in examples}) > 150  # phrasings and keys vary
    negatives = [x for x in examples if x.answer is None]
    assert 0.1 < len(negatives) / len(examples) < 0.35
    for x in examples:
        if x.answer is not None:
            a, b = x.answer
            assert 0 <= a < b <= len(x.passage)
            assert x.passage[a:b].strip() == x.passage[a:b]


def test_prose_sources_give_clean_sentences(tmp_path: Path) -> None:
    import gzip

    (tmp_path / "essay.txt").write_text(
        "A short one. This sentence has more than five words in it. Tiny."
    )
    with gzip.open(tmp_path / "lines.en.gz", "wt", encoding="utf-8") as f:
        f.write(
            "two dogs run across a wide green field\n"
            "This sentence has more than five words in it.\n"
        )
    (tmp_path / "table.tsv").write_text("sentence\tlabel\n, a film that never finds its feet \t0\n")
    prose = load_prose([tmp_path / "essay.txt", tmp_path / "lines.en.gz", tmp_path / "table.tsv"])
    assert prose == [
        "This sentence has more than five words in it.",  # once: duplicates are dropped
        "Two dogs run across a wide green field.",
        "A film that never finds its feet.",  # the table's first column, header skipped
    ]
    examples = make_span_examples(60, seed=0, max_words=40, prose=prose)
    assert any(p in x.passage for x in examples for p in prose)
    for x in examples:
        if x.answer is not None:  # the answer is still where it says
            assert x.passage[x.answer[0] : x.answer[1]].strip()
    with pytest.raises(DataError, match="not found"):
        load_prose([tmp_path / "missing.txt"])
    (tmp_path / "short.txt").write_text("Too short.")
    with pytest.raises(DataError, match="no sentences"):
        load_prose([tmp_path / "short.txt"])


def test_a_value_that_opens_its_sentence_is_capitalised_and_still_the_answer() -> None:
    text, span = _fill("{V} repairs {k}.", "the roof", "the landlord")
    assert text == "The landlord repairs the roof." and span is not None
    assert text[span[0] : span[1]] == "The landlord"
    text, span = _fill("It is {v} who {k}. {V} does.", "pays", "the tenant")
    assert span is not None and text[span[0] : span[1]] == "the tenant"  # the first one

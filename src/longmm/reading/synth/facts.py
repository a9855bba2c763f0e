"""Generated fact questions for the span head (:mod:`longmm.reading.answer.span_head`).

Question/passage pairs from many fact families (pass keys, magic numbers, codes, places,
dates, favourites, who does what, how many, variables), each said and asked in several
phrasings, inside haystack sentences (the passkey filler, random words, plain prose, prose
with numbers that answer nothing, figure placeholders, or real prose from
:func:`load_prose`) with distractor facts of the same family under other keys, and a share
of passages that hold no answer. :class:`~longmm.data.span_data.SpanData` trains the head
on them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from longmm.errors import DataError
from longmm.reading.synth.haystack import PASSKEY_FILLER, vocabulary_words


@dataclass(frozen=True)
class SpanExample:
    """A question, a passage, and the answer's character span in it (``None``: absent)."""

    question: str
    passage: str
    answer: tuple[int, int] | None
    family: str = ""


def _word(rng: np.random.Generator) -> str:
    words = vocabulary_words()
    return words[int(rng.integers(0, len(words)))]


def _name(rng: np.random.Generator) -> str:
    return _word(rng).capitalize()


def _key(rng: np.random.Generator) -> str:
    return f"{_word(rng)}-{_word(rng)}"


def _digits(rng: np.random.Generator, lo: int = 3, hi: int = 9) -> str:
    n = int(rng.integers(lo, hi + 1))
    return str(int(rng.integers(10 ** (n - 1), 10**n)))


def _code(rng: np.random.Generator) -> str:
    alphabet = list("ABCDEFGHJKLMNPQRSTUVWXYZ23456789")
    return "".join(rng.choice(alphabet, size=int(rng.integers(4, 8))))


def _year(rng: np.random.Generator) -> str:
    return str(int(rng.integers(1500, 2030)))


def _date(rng: np.random.Generator) -> str:
    months = "January February March April May June July August September October November"
    month = rng.choice([*months.split(), "December"])
    return f"{int(rng.integers(1, 29))} {month} {_year(rng)}"


_DUTIES = (
    "repairs",
    "cleans",
    "paints",
    "inspects",
    "pays for",
    "looks after",
    "manages",
    "insures",
    "checks",
    "replaces",
)
_THINGS = (
    "heating",
    "roof",
    "boiler",
    "garden",
    "windows",
    "lift",
    "fence",
    "stairs",
    "water pipes",
    "car park",
    "servers",
    "website",
    "accounts",
    "budget",
    "training data",
)
_AGENTS = (
    "the landlord",
    "the tenant",
    "the owner",
    "the council",
    "the caretaker",
    "the agency",
    "the buyer",
    "the seller",
    "the company",
    "the school",
    "the committee",
    "the contractor",
)
_COUNTED = (
    "epochs",
    "annotators",
    "participants",
    "images",
    "sentences",
    "speakers",
    "layers",
    "classes",
    "documents",
    "questions",
    "users",
    "hospitals",
    "languages",
    "tweets",
)
_NUMBER_WORDS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve")


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(0, len(options)))]


def _agent(rng: np.random.Generator) -> str:
    return _pick(rng, _AGENTS) if rng.random() < 0.6 else f"{_name(rng)} {_name(rng)}"


def _count(rng: np.random.Generator) -> str:
    if rng.random() < 0.3:
        return _pick(rng, _NUMBER_WORDS)
    n = int(rng.integers(2, 100_000))
    return f"{n:,}" if rng.random() < 0.5 else str(n)


# Each family: (key maker, value maker, statements, questions). "{k}" is the key (an entity
# that the question names), "{v}" the answer. Statements and questions are mixed freely.
Maker = Any
FAMILIES: dict[str, tuple[Maker, Maker, tuple[str, ...], tuple[str, ...]]] = {
    "passkey": (
        lambda rng: "",
        lambda rng: _digits(rng, 4, 8),
        (
            "The pass key is {v}. Remember it. {v} is the pass key.",
            "The pass key is {v}.",
            "Remember this pass key: {v}.",
            "Your passkey is {v}, keep it safe.",
        ),
        (
            "What is the pass key?",
            "What is the passkey?",
            "Which pass key should be remembered?",
            "Tell me the pass key.",
            "What was the pass key hidden in the text?",
        ),
    ),
    "magic": (
        _key,
        lambda rng: _digits(rng, 5, 8),
        (
            "One of the special magic numbers for {k} is: {v}.",
            "The special magic number for {k} is {v}.",
            "{k} has the special magic number {v}.",
            "For {k}, the magic number is {v}.",
        ),
        (
            "What is the special magic number for {k} mentioned in the provided text?",
            "What is the magic number for {k}?",
            "Which special magic number belongs to {k}?",
            "Find the special magic number for {k}.",
        ),
    ),
    "code": (
        _key,
        _code,
        (
            "The access code for {k} is {v}.",
            "Use {v} as the access code for {k}.",
            "{k} opens with the access code {v}.",
        ),
        (
            "What is the access code for {k}?",
            "Which code opens {k}?",
            "What access code does {k} use?",
        ),
    ),
    "place": (
        _name,
        _name,
        (
            "{k} lives in {v}.",
            "{k} has lived in the town of {v} for years.",
            "The home of {k} is in {v}.",
        ),
        ("Where does {k} live?", "In which town does {k} live?", "Where is the home of {k}?"),
    ),
    "year": (
        lambda rng: f"the {_word(rng)} {rng.choice(['company', 'museum', 'bridge', 'school'])}",
        _year,
        (
            "{K} was founded in {v}.",
            "In {v}, {k} was founded.",
            "{K} dates from {v}, when it was founded.",
        ),
        (
            "When was {k} founded?",
            "In what year was {k} founded?",
            "What year did {k} open?",
        ),
    ),
    "date": (
        lambda rng: f"the meeting with {_name(rng)}",
        _date,
        ("{K} is on {v}.", "{K} was moved to {v}.", "We set {k} for {v}."),
        ("When is {k}?", "On what date is {k}?", "What day was set for {k}?"),
    ),
    "favourite": (
        lambda rng: f"{_name(rng)}'s favourite {rng.choice(['colour', 'fruit', 'animal', 'song'])}",
        _word,
        ("{K} is {v}.", "Everyone knows that {k} is {v}.", "{K} has always been {v}."),
        ("What is {k}?", "Which one is {k}?", "Tell me {k}."),
    ),
    "agent": (  # the answer is the subject, before the verb the question repeats
        lambda rng: (
            f"{_pick(rng, _DUTIES)} the {_pick(rng, _THINGS) if rng.random() < 0.7 else _word(rng)}"
        ),
        _agent,
        (
            "{V} {k}.",
            "{V} {k} and everything that belongs to it.",
            "Under the agreement, {v} {k}.",
            "It is {v} who {k}.",
            "{V} alone {k}, as agreed last year.",
        ),
        ("Who {k}?", "Which party {k}?", "Who is it that {k}?"),
    ),
    "count": (  # a number among other numbers, asked with "how many"
        lambda rng: _pick(rng, _COUNTED) if rng.random() < 0.7 else f"{_word(rng)}s",
        _count,
        (
            "There were {v} {k} in total.",
            "We used {v} {k}, with a rate of 0.01.",
            "The study had {v} {k} from 3 sites.",
            "In 2021 the project counted {v} {k}.",
            "{V} {k} were collected for the first version.",
        ),
        ("How many {k} are there?", "How many {k} were used?", "What is the number of {k}?"),
    ),
    "variable": (
        lambda rng: "".join(rng.choice(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"), size=5)),
        lambda rng: _digits(rng, 4, 6),
        ("VAR {k} = {v}.", "Let {k} be {v}.", "The variable {k} holds {v}."),
        (
            "What value is assigned to {k}?",
            "What is the value of VAR {k}?",
            "Which number does the variable {k} hold?",
        ),
    ),
}

_PROSE = (
    "The committee met again on Tuesday to discuss the budget.",
    "Most of the visitors arrived late because of the rain.",
    "She wrote the first draft quickly and revised it for weeks.",
    "The river runs through the valley and past the old mill.",
    "Nobody expected the results to be so clear.",
    "He kept a notebook of every idea, good or bad.",
    "The software was rewritten twice before anyone used it.",
    "Startups often fail because they build something nobody wants.",
    "The report lists the numbers of each year since the start.",
    "A few of the questions were left for the next meeting.",
)


def _document_sentence(rng: np.random.Generator) -> str:
    """Sentences like those around needles in real and multimodal documents: figure and clip
    placeholders, and prose with numbers that answer nothing (distractors for number spans)."""
    n = int(rng.integers(1, 100))
    choices = (
        f"[Figure {n}: a handwritten digit, scanned.]",
        f"[Audio clip {n}: a spoken digit, recorded.]",
        f"Figure {n} shows the results of the second trial.",
        f"In {_year(rng)} the town had {_digits(rng, 2, 5)} inhabitants.",
        f"Chapter {n} begins on page {_digits(rng, 2, 3)}.",
        f"The {_word(rng)} report counted {_digits(rng, 2, 6)} {_word(rng)} cases last year.",
        f"About {n} percent of the {_word(rng)} votes were lost.",
    )
    return choices[int(rng.integers(0, len(choices)))]


def load_prose(paths: Sequence[str | Path], limit: int = 100_000) -> list[str]:
    """Sentences of real prose for haystacks, from text files (``.txt``/``.md``, or any file
    of lines, gzipped or not; for ``.tsv``/``.csv`` tables the first column, header skipped):
    each line split into sentences, those of 5 to 40 words kept, duplicates dropped, at most
    ``limit``. Folders are read for their ``.txt`` and ``.md`` files."""
    from longmm.data.schema import TEXT
    from longmm.data.sources.base import text_lines
    from longmm.data.sources.tables import read_table
    from longmm.reading.sentences import split_sentences

    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += sorted(f for f in path.rglob("*") if f.suffix in (".txt", ".md"))
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(str(path), "prose source not found (a text file or a folder)")
    seen: dict[str, None] = {}
    for f in files:
        if f.name.lower().removesuffix(".gz").endswith((".tsv", ".csv")):
            rows = read_table(f, text_column=0, label_column=None, header=True)
            lines = [x.inputs[TEXT] for x in rows.splits["all"]]
        else:
            lines = text_lines(f)
        for line in lines:
            for a, b in split_sentences(line):
                sentence = " ".join(line[a:b].split()).lstrip(",;:.-' ")
                if sentence and sentence[-1] not in ".!?":
                    sentence += "."
                if 5 <= len(sentence.split()) <= 40:
                    seen.setdefault(sentence[:1].upper() + sentence[1:], None)
                    if len(seen) >= limit:
                        return list(seen)
    if not seen:
        raise DataError(", ".join(map(str, paths)), "no sentences of 5-40 words in the prose")
    return list(seen)


def _haystack_sentence(
    rng: np.random.Generator, kind: int, prose: Sequence[str] | None = None
) -> str:
    if kind == 4 and prose:
        return prose[int(rng.integers(0, len(prose)))]
    if kind == 3:
        return _document_sentence(rng)
    if kind == 0:
        filler = PASSKEY_FILLER.split(". ")
        return filler[int(rng.integers(0, len(filler)))].rstrip(".") + "."
    if kind == 1:
        return " ".join(_word(rng) for _ in range(int(rng.integers(6, 14)))).capitalize() + "."
    return _PROSE[int(rng.integers(0, len(_PROSE)))]


def _fill(template: str, key: str, value: str) -> tuple[str, tuple[int, int] | None]:
    """The template with key and value put in (``{K}``/``{V}``: capitalised, to open a
    sentence); the span of the value's first occurrence."""
    text = template.replace("{K}", key[:1].upper() + key[1:]).replace("{k}", key)
    first = re.search(r"\{[vV]\}", text)
    text = text.replace("{V}", value[:1].upper() + value[1:]).replace("{v}", value)
    return text, (first.start(), first.start() + len(value)) if first else None


def make_span_example(
    rng: np.random.Generator, max_words: int = 90, prose: Sequence[str] | None = None
) -> SpanExample:
    """One generated example (see the module doc); with ``prose`` (real sentences), half the
    haystacks are real prose."""
    family = list(FAMILIES)[int(rng.integers(0, len(FAMILIES)))]
    make_key, make_value, statements, questions = FAMILIES[family]
    key = make_key(rng)
    value = make_value(rng)
    has_answer = rng.random() > 0.2
    question, _ = _fill(questions[int(rng.integers(0, len(questions)))], key, value)
    facts: list[tuple[str, tuple[int, int] | None]] = []
    if has_answer:
        facts.append(_fill(statements[int(rng.integers(0, len(statements)))], key, value))
    n_distract = int(rng.integers(0, 4)) + (0 if has_answer else 1)
    for _ in range(n_distract):
        # A distractor of the same family (another key, another value) or of another family.
        fam = family if rng.random() < 0.7 else list(FAMILIES)[int(rng.integers(0, len(FAMILIES)))]
        mk, mv, st, _q = FAMILIES[fam]
        other_key = mk(rng)
        if other_key == key and fam != "passkey":
            continue
        if fam == "passkey" and family == "passkey":
            continue  # two pass keys would make the question ambiguous
        other_value = mv(rng)
        if other_value == value:
            continue
        text, _ = _fill(st[int(rng.integers(0, len(st)))], other_key, other_value)
        facts.append((text, None))
    kind = 4 if prose and rng.random() < 0.5 else int(rng.integers(0, 3))
    kinds = 5 if prose else 4
    sentences: list[tuple[str, tuple[int, int] | None]] = []
    words = 0
    budget = int(rng.integers(10, max_words))
    while words < budget:
        mixed = kind if rng.random() < 0.75 else int(rng.integers(0, kinds))
        s = _haystack_sentence(rng, mixed, prose)
        sentences.append((s, None))
        words += len(s.split())
    for fact in facts:
        sentences.insert(int(rng.integers(0, len(sentences) + 1)), fact)
    passage, answer, offset = "", None, 0
    for text, span in sentences:
        if passage:
            passage += " "
            offset += 1
        if span is not None:
            answer = (offset + span[0], offset + span[1])
        passage += text
        offset += len(text)
    return SpanExample(question, passage, answer, family)


def make_span_examples(
    n: int, seed: int, max_words: int = 90, prose: Sequence[str] | None = None
) -> list[SpanExample]:
    rng = np.random.default_rng([seed, 7919])
    return [make_span_example(rng, max_words, prose) for _ in range(n)]

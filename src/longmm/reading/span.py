"""Span extraction: a small trained head over the frozen pretrained MiniLM that finds the
answer to a question in an evidence passage (start and end token), or says it is not there.

How it reads: the question and a window of the passage go through all-MiniLM-L6-v2 together
(``[CLS] question [SEP] passage [SEP]``, segment ids 0/1), frozen; the head (a projection, one
Transformer layer and a start/end scorer, about 0.3 M weights) scores every passage token as
the start and as the end of the answer. A span scores ``start + end`` minus the score of the
"no answer" position ([CLS]); the best span over all windows of all passages is the answer.
Spans are widened to whole words (a number that WordPiece cut in pieces comes back whole).

How it is trained (``longmm fit --config recipes/span_head.yaml``): :class:`SpanData`
generates question/passage pairs from many fact families (pass keys, magic numbers, codes,
places, dates, favourites, who does what, how many, variables), each said and asked in
several phrasings, inside haystack sentences (the passkey filler, random words, plain prose,
prose with numbers that answer nothing, figure placeholders) with distractor facts of the
same family under other keys, and a share of passages that hold no answer. MiniLM's
features are computed once (the encoder is frozen), so the epochs train only the head.
The trained head ships in ``longmm/reading/weights/span_head.safetensors``;
:class:`SpanExtractor` (an ``AnswerExtractor`` for the retrieval reader) loads it.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from longmm.data.datamodule import SourceDataModule
from longmm.data.schema import SourceData
from longmm.errors import DataError
from longmm.modules.stack import pre_norm_stack
from longmm.reading.answer import AnswerSpan, Evidence
from longmm.reading.needles import PASSKEY_FILLER, vocabulary_words
from longmm.reading.sentences import split_sentences
from longmm.tasks.base import Task
from longmm.training.optim import OptimizerName, SchedulerName

PACKAGED_WEIGHTS = Path(__file__).resolve().parent / "weights" / "span_head.safetensors"
FEATURE_DIM = 384  # all-MiniLM-L6-v2's hidden size


# -- the frozen encoder and the inputs -----------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _minilm() -> tuple[Any, Any]:
    """The packaged MiniLM (eval mode, no gradients) and its fast tokenizer."""
    from tokenizers import Tokenizer

    from longmm.data.text import pretrained_path
    from longmm.encoders.pretrained import load_pretrained

    folder = pretrained_path(None)
    model = load_pretrained(folder).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return model, tok


@dataclass(frozen=True)
class Window:
    """One encoder input: ``[CLS] q [SEP] passage tokens [first, first+n) [SEP]``.

    ``offsets`` are the character ranges (in the passage) of the window's passage tokens;
    ``word_start``/``word_end`` tell where each passage token's word starts and ends (so a
    span can be widened to whole words)."""

    ids: list[int]
    type_ids: list[int]  # MiniLM's segments: 0 question, 1 passage
    passage_at: int  # index of the first passage token in ``ids``
    offsets: list[tuple[int, int]]
    roles: list[int]  # the head's: 0 question, 1 passage, 2 passage token that is a question word


def _encode_text(text: str) -> tuple[list[int], list[tuple[int, int]]]:
    _, tok = _minilm()
    enc = tok.encode(text, add_special_tokens=False)
    return list(enc.ids), list(enc.offsets)


def make_windows(
    question: str, passage: str, max_length: int = 256, stride: int = 64
) -> list[Window]:
    """Windows over ``passage`` that fit ``max_length`` with the question, overlapping by
    ``stride`` tokens (an answer cut by one window's edge is whole in the next)."""
    _, tok = _minilm()
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    q_ids, _ = _encode_text(question)
    q_ids = q_ids[: max_length // 2]
    p_ids, p_offsets = _encode_text(passage)
    asked = _content_ids(q_ids)
    room = max_length - len(q_ids) - 3
    step = max(room - stride, 1)
    windows = []
    first = 0
    while True:
        ids = p_ids[first : first + room]
        head = [cls_id, *q_ids, sep_id]
        windows.append(
            Window(
                ids=[*head, *ids, sep_id],
                type_ids=[0] * len(head) + [1] * (len(ids) + 1),
                passage_at=len(head),
                offsets=p_offsets[first : first + room],
                roles=[0] * len(head) + [2 if i in asked else 1 for i in ids] + [1],
            )
        )
        if first + room >= len(p_ids):
            return windows
        first += step


@functools.lru_cache(maxsize=1)
def _content_vocab() -> frozenset[int]:
    """Token ids that carry content (not punctuation, not stopwords): the question words
    worth matching in a passage (the classic exact-match feature of span readers)."""
    from longmm.reading.answer import STOPWORDS

    _, tok = _minilm()
    keep = set()
    for token, i in tok.get_vocab().items():
        word = token.removeprefix("##")
        special = token.startswith("[") and token.endswith("]")
        if word.isalnum() and not special and word not in STOPWORDS:
            keep.add(i)
    return frozenset(keep)


def _content_ids(ids: Sequence[int]) -> set[int]:
    vocab = _content_vocab()
    return {i for i in ids if i in vocab}


def _pad(rows: Sequence[Sequence[int]], value: int = 0) -> Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


@torch.no_grad()
def encode_windows(windows: Sequence[Window], batch_size: int = 32) -> list[Tensor]:
    """Frozen MiniLM features of each window: ``(L_i, 384)`` float32, one per window."""
    model, _ = _minilm()
    out: list[Tensor] = []
    order = sorted(range(len(windows)), key=lambda i: len(windows[i].ids))  # less padding
    feats: dict[int, Tensor] = {}
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        ids = _pad([windows[i].ids for i in idx])
        types = _pad([windows[i].type_ids for i in idx])
        mask = _pad([[1] * len(windows[i].ids) for i in idx])
        hidden = model(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        for row, i in enumerate(idx):
            feats[i] = hidden[row, : len(windows[i].ids)]
    out = [feats[i] for i in range(len(windows))]
    return out


# -- the head ---------------------------------------------------------------------------------
class SpanHead(nn.Module):
    """Start/end scores per token from frozen encoder features.

    ``features (B, L, in_dim)``, ``mask (B, L)`` True on real tokens, ``type_ids (B, L)``
    (0 question, 1 passage, 2 passage token that is a content word of the question) ->
    ``(start, end)`` logits ``(B, L)``; padding gets -inf."""

    def __init__(
        self,
        in_dim: int = FEATURE_DIM,
        dim: int = 128,
        heads: int = 4,
        layers: int = 1,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, dim)
        self.segment = nn.Embedding(3, dim)  # question / passage / passage word in question
        self.blocks = pre_norm_stack(dim, heads, layers, dropout, ff_dim=2 * dim, activation="relu")
        self.norm = nn.LayerNorm(dim)
        self.score = nn.Linear(dim, 2)

    def forward(self, features: Tensor, mask: Tensor, type_ids: Tensor) -> tuple[Tensor, Tensor]:
        x = self.proj(features) + self.segment(type_ids)
        x = self.norm(self.blocks(x, src_key_padding_mask=~mask))
        logits = self.score(x).masked_fill(~mask[..., None], float("-inf"))  # (B, L, 2)
        return logits[..., 0], logits[..., 1]


def best_span(
    start: Tensor,
    end: Tensor,
    passage_at: int,
    n_passage: int,
    max_tokens: int,
    sentence: Sequence[int] | None = None,
) -> tuple[int, int, float]:
    """Best ``(i, j)`` passage-token span (``i <= j < i + max_tokens``) of one window and its
    score over the no-answer score (``start[0] + end[0]``, the [CLS] position).

    ``sentence`` numbers the sentence of each passage token: a span then starts and ends in
    one sentence (an answer does not run across a sentence end, a heading or a line break)."""
    s = start[passage_at : passage_at + n_passage]
    e = end[passage_at : passage_at + n_passage]
    pair = s[:, None] + e[None, :]  # (n, n)
    n = pair.shape[0]
    allowed = torch.ones(n, n, dtype=torch.bool).triu().tril(max_tokens - 1)
    if sentence is not None:
        ids = torch.as_tensor(list(sentence), dtype=torch.long)
        allowed &= ids[:, None] == ids[None, :]
    pair = pair.masked_fill(~allowed, float("-inf"))
    flat = int(torch.argmax(pair))
    i, j = divmod(flat, n)
    return i, j, float(pair[i, j] - (start[0] + end[0]))


# -- training examples ----------------------------------------------------------------------
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


def _token_targets(window: Window, answer: tuple[int, int] | None) -> tuple[int, int]:
    """Start/end token indices (in the window) of ``answer``; (0, 0) at [CLS] if absent."""
    if answer is None:
        return 0, 0
    a, b = answer
    inside = [k for k, (s, e) in enumerate(window.offsets) if s < b and e > a]
    if not inside:
        return 0, 0
    return window.passage_at + inside[0], window.passage_at + inside[-1]


def _answer_window(example: SpanExample, max_length: int) -> Window:
    """The first window that holds the whole answer (the first window when there is none):
    a passage longer than one window must not turn its answer into "no answer"."""
    windows = make_windows(example.question, example.passage, max_length)
    if example.answer is not None:
        a, b = example.answer
        for w in windows:
            if w.offsets and w.offsets[0][0] <= a and b <= w.offsets[-1][1]:
                return w
    return windows[0]


class SpanFeatures(Dataset):
    """Precomputed frozen features, token types, and start/end targets of examples."""

    def __init__(self, examples: Sequence[SpanExample], max_length: int) -> None:
        windows = [_answer_window(x, max_length) for x in examples]
        self.features = [f.half() for f in encode_windows(windows)]
        self.type_ids = [torch.tensor(w.roles) for w in windows]
        targets = [_token_targets(w, x.answer) for w, x in zip(windows, examples, strict=True)]
        self.targets = torch.tensor(targets, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {
            "features": self.features[i],
            "type_ids": self.type_ids[i],
            "start": self.targets[i, 0],
            "end": self.targets[i, 1],
        }


def collate_spans(items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    width = max(x["features"].shape[0] for x in items)
    b = len(items)
    feats = torch.zeros(b, width, items[0]["features"].shape[1])
    types = torch.zeros(b, width, dtype=torch.long)
    mask = torch.zeros(b, width, dtype=torch.bool)
    for i, x in enumerate(items):
        n = x["features"].shape[0]
        feats[i, :n] = x["features"].float()
        types[i, :n] = x["type_ids"]
        mask[i, :n] = True
    return {
        "features": feats,
        "type_ids": types,
        "mask": mask,
        "start": torch.stack([x["start"] for x in items]),
        "end": torch.stack([x["end"] for x in items]),
    }


class SpanData(SourceDataModule):
    """Generated span-extraction examples with frozen MiniLM features (computed in ``setup``).

    ``train``/``val``/``test`` examples come from three different seeds; ``max_words`` is the
    longest haystack around the facts, ``max_length`` the encoder window in tokens. ``prose``:
    text files or folders of real prose (see :func:`load_prose`) for half the haystacks, so
    that the head meets facts inside real sentences, not only inside generated ones."""

    def __init__(
        self,
        train: int = 3000,
        val: int = 300,
        test: int = 300,
        max_words: int = 90,
        max_length: int = 192,
        prose: list[str] | None = None,
        seed: int = 0,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
    ) -> None:
        super().__init__(format="generated", seed=seed, batch_size=batch_size)
        self.eval_batch_size = eval_batch_size or batch_size
        if min(train, val, test) < 1:
            raise DataError("data", f"train/val/test counts must be >= 1, got {train}/{val}/{test}")
        self.counts = {"train": train, "val": val, "test": test}
        self.max_words = max_words
        self.max_length = max_length
        self.prose_paths = list(prose or [])

    @functools.cached_property
    def prose(self) -> list[str]:
        return load_prose(self.prose_paths) if self.prose_paths else []

    def read_source(self) -> SourceData:
        return SourceData(splits={}, classes=[], description=self._description())

    def _description(self) -> str:
        return (
            "generated span-extraction questions over "
            f"{len(FAMILIES)} fact families ({', '.join(FAMILIES)}), with distractors and "
            "20% passages without the answer"
            + (
                f"; haystacks half real prose from {', '.join(self.prose_paths)}"
                if self.prose_paths
                else ""
            )
        )

    @property
    def classes(self) -> list[str]:  # type: ignore[override]
        return []

    @functools.cached_property
    def examples(self) -> dict[str, list[SpanExample]]:
        return {
            name: make_span_examples(n, self.seed * 3 + k, self.max_words, self.prose)
            for k, (name, n) in enumerate(self.counts.items())
        }

    def setup(self, stage: str | None = None) -> None:
        if not self.datasets:
            self.datasets = {
                name: SpanFeatures(ex, self.max_length) for name, ex in self.examples.items()
            }

    def _loader(self, ds: Dataset, batch_size: int, sampler: Any = None) -> DataLoader:
        return DataLoader(
            ds,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=collate_spans,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def summary(self) -> dict[str, Any]:
        answered = {
            name: round(sum(x.answer is not None for x in ex) / len(ex), 3)
            for name, ex in self.examples.items()
        }
        return {
            "source": "generated",
            "description": self._description(),
            "splits": {name: {"count": len(ex)} for name, ex in self.examples.items()},
            "with_answer": answered,
            "max_length": self.max_length,
            "prose_sentences": len(self.prose),
        }

    def preprocessing_state(self) -> dict[str, Any]:
        return {"encoder": "minilm", "max_length": self.max_length}

    def state_dict(self) -> dict[str, Any]:
        return {"preprocessing": json.dumps(self.preprocessing_state())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


# -- the task -----------------------------------------------------------------------------
class SpanExtraction(Task):
    """Trains a :class:`SpanHead` on precomputed frozen features (cross-entropy on the start
    and end tokens; [CLS] for "no answer"). Reports exact span match, no-answer accuracy and
    token F1; writes ``span_head.safetensors`` (weights + architecture) into the run folder."""

    monitor = "val/accuracy"
    monitor_mode = "max"

    def __init__(
        self,
        dim: int = 128,
        heads: int = 4,
        layers: int = 1,
        dropout: float = 0.1,
        max_answer_tokens: int = 24,
        optimizer: OptimizerName = "adamw",
        lr: float = 2e-3,
        weight_decay: float = 0.01,
        momentum: float = 0.9,
        scheduler: SchedulerName = "cosine",
        warmup_epochs: float = 0.5,
        step_epochs: int = 10,
        gamma: float = 0.1,
    ) -> None:
        super().__init__(
            optimizer=optimizer,
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            scheduler=scheduler,
            warmup_epochs=warmup_epochs,
            step_epochs=step_epochs,
            gamma=gamma,
        )
        self.save_recipe_hyperparameters()
        self.architecture = {"dim": dim, "heads": heads, "layers": layers, "dropout": dropout}
        self.head = SpanHead(**self.architecture)
        self.max_answer_tokens = max_answer_tokens
        self.eval_results: dict[str, dict[str, Any]] = {}
        self._counts: dict[str, list[float]] = {}

    def _loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        start, end = self.head(batch["features"], batch["mask"], batch["type_ids"])
        loss = (F.cross_entropy(start, batch["start"]) + F.cross_entropy(end, batch["end"])) / 2
        return loss, start, end

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss, _, _ = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["start"]))
        return loss

    def _eval_step(self, batch: dict[str, Tensor], stage: str) -> None:
        loss, start, end = self._loss(batch)
        sums = self._counts.setdefault(stage, [0.0] * 6)
        for b in range(len(start)):
            types, mask = batch["type_ids"][b], batch["mask"][b]
            at = int(torch.nonzero(types).min())
            n = int(mask.sum()) - at - 1
            i, j, margin = best_span(start[b], end[b], at, n, self.max_answer_tokens)
            gold = (int(batch["start"][b]), int(batch["end"][b]))
            pred = (at + i, at + j) if margin > 0 else (0, 0)
            sums[0] += 1
            sums[1] += float(pred == gold)
            if gold == (0, 0):
                sums[2] += 1
                sums[3] += float(pred == (0, 0))
            else:
                overlap = max(0, min(pred[1], gold[1]) - max(pred[0], gold[0]) + 1)
                if pred != (0, 0) and overlap:
                    p = overlap / (pred[1] - pred[0] + 1)
                    r = overlap / (gold[1] - gold[0] + 1)
                    sums[4] += 2 * p * r / (p + r)
                sums[5] += 1
        self.log(f"{stage}/loss", loss, batch_size=len(start))

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _eval_end(self, stage: str) -> None:
        n, exact, nulls, null_ok, f1, answered = self._counts.pop(stage, [0.0] * 6)
        results = {
            "accuracy": round(exact / max(n, 1), 4),
            "no_answer_accuracy": round(null_ok / max(nulls, 1), 4),
            "answer_token_f1": round(f1 / max(answered, 1), 4),
            "examples": int(n),
        }
        self.eval_results[stage] = results
        for key in ("accuracy", "no_answer_accuracy", "answer_token_f1"):
            self.log(f"{stage}/{key}", float(results[key]), prog_bar=key == "accuracy")

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")

    def write_artifacts(self, run: Path) -> list[str]:
        """``span_head.safetensors``: the head's weights with its architecture as metadata."""
        save_span_head(self.head, self.architecture, Path(run) / "span_head.safetensors")
        return []


def save_span_head(head: SpanHead, architecture: dict[str, Any], path: Path) -> None:
    from longmm.runs import save_weights

    meta = {"architecture": json.dumps(architecture), "encoder": "minilm"}
    save_weights(head.state_dict(), path, metadata=meta)


def export_span_head(checkpoint: str | Path, out: str | Path) -> Path:
    """The head of a :class:`SpanExtraction` checkpoint (``.ckpt``) as a span-head file."""
    from longmm.runs import read_checkpoint

    ckpt = read_checkpoint(checkpoint)
    hp = ckpt.get("hyper_parameters", {})
    architecture = {k: hp[k] for k in ("dim", "heads", "layers", "dropout") if k in hp}
    state = {k[5:]: v for k, v in ckpt["state_dict"].items() if k.startswith("head.")}
    if not state:
        raise DataError(str(checkpoint), "no span head weights (head.*) in this checkpoint")
    head = SpanHead(**architecture)
    head.load_state_dict(state)
    save_span_head(head, architecture, Path(out))
    return Path(out)


def load_span_head(path: str | Path | None = None) -> SpanHead:
    """A trained head from a safetensors file (default: the one that ships in the package)."""
    from safetensors import safe_open

    from longmm.runs import load_weights

    path = Path(path) if path else PACKAGED_WEIGHTS
    if not path.is_file():
        raise DataError(str(path), "span head weights not found")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if "architecture" not in meta:
        raise DataError(str(path), "no 'architecture' metadata: not a span head file")
    head = SpanHead(**json.loads(meta["architecture"]))
    head.load_state_dict(load_weights(path))
    return head.eval()


# -- the extractor the reader uses ----------------------------------------------------------
class SpanExtractor:
    """The trained span head as the retrieval reader's ``AnswerExtractor``.

    Every passage is read in short overlapping windows of ``max_length`` tokens with the
    question (on real prose the head places spans better in short windows than in long ones:
    on the essay needles that failed with 192-token windows, 96 fixed 4 of 5); the best
    span of all (widened to whole words) is the answer, scored by its margin over "no
    answer". ``min_score=None`` always answers with the best span; a number returns ``None``
    when no span beats "no answer" by that margin."""

    def __init__(
        self,
        weights: str | Path | None = None,
        max_length: int = 96,
        stride: int = 24,
        max_answer_tokens: int = 12,
        min_score: float | None = None,
        batch_size: int = 16,
    ) -> None:
        self.head = load_span_head(weights)
        self.max_length = max_length
        self.stride = stride
        self.max_answer_tokens = max_answer_tokens
        self.min_score = min_score
        self.batch_size = batch_size

    @torch.no_grad()
    def extract(self, question: str, passages: Sequence[Evidence]) -> AnswerSpan | None:
        jobs: list[tuple[int, Window]] = []
        sentence_ends: dict[int, np.ndarray] = {}
        for pi, p in enumerate(passages):
            if p.text.strip():
                jobs += [
                    (pi, w) for w in make_windows(question, p.text, self.max_length, self.stride)
                ]
                sentence_ends[pi] = np.array([e for _, e in split_sentences(p.text)])
        if not jobs:
            return None
        feats = encode_windows([w for _, w in jobs], self.batch_size)
        best: tuple[float, int, int, int] | None = None
        for b in range(0, len(jobs), self.batch_size):
            chunk = list(range(b, min(b + self.batch_size, len(jobs))))
            batch = collate_spans(
                [
                    {
                        "features": feats[k],
                        "type_ids": torch.tensor(jobs[k][1].roles),
                        "start": torch.tensor(0),
                        "end": torch.tensor(0),
                    }
                    for k in chunk
                ]
            )
            start, end = self.head(batch["features"], batch["mask"], batch["type_ids"])
            for row, k in enumerate(chunk):
                pi, w = jobs[k]
                token_starts = np.array([a for a, _ in w.offsets])
                i, j, margin = best_span(
                    start[row],
                    end[row],
                    w.passage_at,
                    len(w.offsets),
                    self.max_answer_tokens,
                    np.searchsorted(sentence_ends[pi], token_starts, side="right").tolist(),
                )
                if best is None or margin > best[0]:
                    best = (margin, pi, w.offsets[i][0], w.offsets[j][1])
        assert best is not None
        margin, pi, a, b = best
        if self.min_score is not None and margin < self.min_score:
            return None
        passage = passages[pi]
        a, b = _whole_words(passage.text, a, b)
        return AnswerSpan(passage.text[a:b], pi, passage.start + a, passage.start + b, margin)


def _whole_words(text: str, a: int, b: int) -> tuple[int, int]:
    """Widen ``[a, b)`` to whole alphanumeric words (WordPiece may end a span mid-word)."""
    while a > 0 and text[a - 1].isalnum() and text[a].isalnum():
        a -= 1
    while b < len(text) and text[b].isalnum() and text[b - 1].isalnum():
        b += 1
    return a, b

"""Long-context task generators: passkey, needle-in-a-haystack (RULER style), variable
tracking and multimodal needles, in haystacks from 1K to 1M tokens.

Every sample is a :class:`NeedleSample`: a document (plain text, plus figures or audio clips
at character positions for the multimodal tasks), a question, the reference answers, and the
character spans of the needles that carry them. Generation is seeded and deterministic:
sample ``index`` of ``(task, length, seed)`` depends on nothing else.

**Tasks** (``TASKS``): ``passkey``; ``niah_single``; ``niah_multikey`` (the target among
distractor needles with other keys); ``niah_multivalue`` (one key, several values: all are the
answer); ``niah_multiquery`` (several keys asked at once); ``variable_tracking`` (a chain of
assignments ``VAR A = 12345 ... VAR B = VAR A``; the answer is every name bound to the value);
``mm_image`` (the answer is the digit drawn in one of several figures: sklearn's real 8x8
scans, or MNIST when ``mnist`` names its folder) and ``mm_audio`` (the digit spoken in one of
several clips, made by longmm's speech synthesizer). Haystacks, token counts and the layout
of needles in them: :mod:`longmm.reading.synth.haystack`.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from longmm.errors import DataError
from longmm.reading.synth.haystack import (
    Attachment,
    HaystackKind,
    Insert,
    TokenCounter,
    assemble,
    default_counter,
    haystack_units,
    vocabulary_words,
)

PASSKEY_INTRO = (
    "There is an important info hidden inside a lot of irrelevant text. "
    "Find it and memorize them. I will quiz you about the important information there."
)
SPOKEN_RATE = 8000
MIN_LENGTH = 256
MAX_LENGTH = 2_000_000


# -- samples -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NeedleSample:
    """One long-context test: ``text`` (+ ``attachments``), ``question``, ``answers``.

    ``needle_spans``: character ranges in ``text`` of the needles that carry the answers (for
    multimodal tasks, the caption of the asked-for attachment), the one placed at ``depth``
    first; ``tokens``: the text's length
    in the counter's tokens; ``depth``: the requested depth of the target needle."""

    task: str
    text: str
    question: str
    answers: tuple[str, ...]
    depth: float
    length: int
    tokens: int
    needle_spans: tuple[tuple[int, int], ...]
    attachments: tuple[Attachment, ...] = ()
    seed: int = 0
    index: int = 0

    @property
    def needle_depths(self) -> tuple[float, ...]:
        """Where each needle starts, as a fraction of the text's characters."""
        return tuple(a / max(len(self.text), 1) for a, _ in self.needle_spans)


_WORD = re.compile(r"[A-Za-z0-9]+")


def score(prediction: str, answers: Sequence[str]) -> float:
    """RULER's string-match-all: the fraction of ``answers`` that occur in ``prediction`` as
    whole words (so "123456" does not count for "12345"), ignoring case."""
    if not answers:
        raise ValueError("score needs at least one reference answer")
    words = {w.lower() for w in _WORD.findall(prediction or "")}
    return sum(all(p.lower() in words for p in _WORD.findall(a)) for a in answers) / len(answers)


# -- needles -------------------------------------------------------------------------------------
def _number(rng: np.random.Generator, digits: int) -> str:
    return str(int(rng.integers(10 ** (digits - 1), 10**digits)))


def _key(rng: np.random.Generator, taken: set[str]) -> str:
    words = vocabulary_words()
    while True:
        key = "-".join(words[i] for i in rng.integers(0, len(words), size=2))
        if key not in taken:
            taken.add(key)
            return key


def _var_name(rng: np.random.Generator, taken: set[str]) -> str:
    while True:
        name = "".join(rng.choice(list(string.ascii_uppercase), size=5))
        if name not in taken:
            taken.add(name)
            return name


def _spread(rng: np.random.Generator, n: int, avoid: float) -> list[float]:
    """``n`` random depths at least 0.02 away from ``avoid`` (distractors stay distinct)."""
    out: list[float] = []
    while len(out) < n:
        d = float(rng.uniform(0.0, 1.0))
        if abs(d - avoid) >= 0.02:
            out.append(d)
    return out


def _magic(key: str, value: str) -> str:
    return f"One of the special magic numbers for {key} is: {value}."


@dataclass(frozen=True)
class _Plan:
    inserts: list[Insert]
    question: str
    answers: tuple[str, ...]
    head: str = ""


def _plan_passkey(rng: np.random.Generator, depth: float, **_: object) -> _Plan:
    key = _number(rng, int(rng.integers(5, 8)))
    line = f"The pass key is {key}. Remember it. {key} is the pass key."
    return _Plan(
        [Insert(depth, line, target=True)], "What is the pass key?", (key,), head=PASSKEY_INTRO
    )


def _plan_single(rng: np.random.Generator, depth: float, **_: object) -> _Plan:
    key, value = _key(rng, set()), _number(rng, 7)
    question = f"What is the special magic number for {key} mentioned in the provided text?"
    return _Plan([Insert(depth, _magic(key, value), target=True)], question, (value,))


def _plan_multikey(rng: np.random.Generator, depth: float, num_keys: int = 4, **_: object) -> _Plan:
    taken: set[str] = set()
    key, value = _key(rng, taken), _number(rng, 7)
    inserts = [Insert(depth, _magic(key, value), target=True)]
    values = {value}
    for d in _spread(rng, num_keys - 1, depth):
        other = _number(rng, 7)
        while other in values:
            other = _number(rng, 7)
        values.add(other)
        inserts.append(Insert(d, _magic(_key(rng, taken), other)))
    question = f"What is the special magic number for {key} mentioned in the provided text?"
    return _Plan(inserts, question, (value,))


def _plan_multivalue(
    rng: np.random.Generator, depth: float, num_values: int = 4, **_: object
) -> _Plan:
    key = _key(rng, set())
    values: list[str] = []
    while len(values) < num_values:
        v = _number(rng, 7)
        if v not in values:
            values.append(v)
    depths = [depth, *_spread(rng, num_values - 1, depth)]
    inserts = [Insert(d, _magic(key, v), target=True) for d, v in zip(depths, values, strict=True)]
    question = f"What are all the special magic numbers for {key} mentioned in the provided text?"
    return _Plan(inserts, question, tuple(values))


def _plan_multiquery(
    rng: np.random.Generator, depth: float, num_keys: int = 4, num_queries: int = 2, **_: object
) -> _Plan:
    taken: set[str] = set()
    keys = [_key(rng, taken) for _ in range(num_keys)]
    values: list[str] = []
    while len(values) < num_keys:
        v = _number(rng, 7)
        if v not in values:
            values.append(v)
    depths = [depth, *_spread(rng, num_keys - 1, depth)]
    inserts = [
        Insert(d, _magic(k, v), target=i < num_queries)
        for i, (d, k, v) in enumerate(zip(depths, keys, values, strict=True))
    ]
    asked = keys[:num_queries]
    question = (
        "What are the special magic numbers for "
        + ", ".join(asked[:-1])
        + f" and {asked[-1]} mentioned in the provided text?"
    )
    return _Plan(inserts, question, tuple(values[:num_queries]))


def _plan_variables(
    rng: np.random.Generator, depth: float, hops: int = 4, chains: int = 2, **_: object
) -> _Plan:
    taken: set[str] = set()
    inserts: list[Insert] = []
    answer_value, answers = "", ()
    used_values: set[str] = set()
    for c in range(chains):
        value = _number(rng, 5)
        while value in used_values:
            value = _number(rng, 5)
        used_values.add(value)
        names = [_var_name(rng, taken) for _ in range(hops + 1)]
        # The target chain starts at the requested depth; later hops follow it in order.
        start = depth if c == 0 else float(rng.uniform(0.0, 1.0))
        later = np.sort(rng.uniform(start, 1.0, size=hops)).tolist() if start < 1.0 else []
        depths = [start, *later] if len(later) == hops else [start] * (hops + 1)
        lines = [f"VAR {names[0]} = {value}."] + [
            f"VAR {names[i + 1]} = VAR {names[i]}." for i in range(hops)
        ]
        for d, line in zip(depths, lines, strict=True):
            inserts.append(Insert(d, line, target=c == 0))
        if c == 0:
            answer_value, answers = value, tuple(names)
    question = f"Find all variables that are assigned the value {answer_value} in the text above."
    return _Plan(inserts, question, answers)


@functools.lru_cache(maxsize=1)
def _digit_images() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's digits held out from the digit classifiers' training (the recipes' test
    split: seed 0, fractions 0.7/0.1/0.2), as uint8 (N, 8, 8) and labels (N,)."""
    from sklearn.datasets import load_digits

    from longmm.data.splits import seeded_split

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    test = seeded_split(len(images), (0.7, 0.1, 0.2), 0)[2]
    return images[test], bunch.target[test]


def digit_image(rng: np.random.Generator, digit: int, mnist: str | None = None) -> np.ndarray:
    """A real scan of ``digit``: sklearn's 8x8 (held-out split) or MNIST 28x28 from a folder."""
    if mnist:
        images, labels = _mnist(mnist)
    else:
        images, labels = _digit_images()
    choices = np.flatnonzero(labels == digit)
    return images[int(rng.choice(choices))]


@functools.lru_cache(maxsize=2)
def _mnist(folder: str) -> tuple[np.ndarray, np.ndarray]:
    """MNIST images held out by the MNIST recipes (their test split of t10k: seed 0,
    0.7/0.1/0.2), as uint8 (N, 28, 28) and labels (N,)."""
    from longmm.data.sources.images import _IDX_IMAGES, _IDX_LABELS, _idx_file, read_idx
    from longmm.data.splits import seeded_split

    root = Path(folder)
    images_path, labels_path = _idx_file(root, "t10k", "images"), _idx_file(root, "t10k", "labels")
    if images_path is None or labels_path is None:
        raise DataError(folder, "no t10k-images/labels-idx*-ubyte[.gz] MNIST files")
    images, labels = read_idx(images_path, _IDX_IMAGES), read_idx(labels_path, _IDX_LABELS)
    test = seeded_split(len(images), (0.7, 0.1, 0.2), 0)[2]
    return images[test], labels[test]


def spoken_digit(rng: np.random.Generator, digit: int) -> tuple[np.ndarray, int]:
    """A synthetic spoken ``digit`` (float32 waveform, sample rate) from a random speaker."""
    from longmm.data.builtin.spoken_digits import synthesize_digit

    sub = np.random.default_rng(int(rng.integers(0, 2**31 - 1)))
    return synthesize_digit(digit, sub, SPOKEN_RATE), SPOKEN_RATE


def _plan_multimodal(
    rng: np.random.Generator,
    depth: float,
    kind: Literal["image", "audio"] = "image",
    num_figures: int = 8,
    mnist: str | None = None,
    **_: object,
) -> _Plan:
    numbers = rng.choice(np.arange(1, 100), size=num_figures, replace=False).tolist()
    digits = rng.integers(0, 10, size=num_figures).tolist()
    depths = [depth, *_spread(rng, num_figures - 1, depth)]
    inserts = []
    for i, (d, n, digit) in enumerate(zip(depths, numbers, digits, strict=True)):
        if kind == "image":
            label = f"Figure {n}"
            text = f"{label}: a handwritten digit, scanned."
            data, sr, source = digit_image(rng, digit, mnist), None, mnist or "sklearn-digits"
        else:
            label = f"Audio clip {n}"
            text = f"{label}: a spoken digit, recorded."
            (data, sr), source = spoken_digit(rng, digit), "spoken-digits"
        attachment = (kind, label, data, str(digit), sr, source)
        inserts.append(Insert(d, text, target=i == 0, attachment=attachment))
    label = inserts[0].attachment[1]  # type: ignore[index]
    if kind == "image":
        question = f"What digit does {label.lower()} show?"
    else:
        question = f"What digit is spoken in {label.lower()}?"
    return _Plan(inserts, question, (str(digits[0]),))


PlanFn = Callable[..., _Plan]
TASKS: dict[str, PlanFn] = {
    "passkey": _plan_passkey,
    "niah_single": _plan_single,
    "niah_multikey": _plan_multikey,
    "niah_multivalue": _plan_multivalue,
    "niah_multiquery": _plan_multiquery,
    "variable_tracking": _plan_variables,
    "mm_image": functools.partial(_plan_multimodal, kind="image"),
    "mm_audio": functools.partial(_plan_multimodal, kind="audio"),
}
_TASK_IDS = {name: i for i, name in enumerate(TASKS)}


def _haystack_id(haystack: str) -> int:
    return sum((i + 1) * ord(c) for i, c in enumerate(haystack)) % (2**31)


def make_sample(
    task: str,
    length: int,
    depth: float,
    *,
    seed: int = 0,
    index: int = 0,
    haystack: HaystackKind = "filler",
    counter: TokenCounter | None = None,
    **options: object,
) -> NeedleSample:
    """One sample of ``task``: a document of ``length`` tokens with the target needle at
    ``depth``. ``options`` go to the task (``num_keys``, ``num_values``, ``num_queries``,
    ``hops``, ``chains``, ``num_figures``, ``mnist``)."""
    if task not in TASKS:
        raise DataError("task", f"unknown needle task {task!r}; choose from {', '.join(TASKS)}")
    if not MIN_LENGTH <= length <= MAX_LENGTH:
        raise DataError("length", f"{length} tokens is outside {MIN_LENGTH}..{MAX_LENGTH}")
    if not 0.0 <= depth <= 1.0:
        raise DataError("depth", f"{depth} is outside 0..1")
    counter = counter or default_counter("minilm")
    key = [seed, _TASK_IDS[task], length, index, int(round(depth * 1e6)), _haystack_id(haystack)]
    rng = np.random.default_rng(key)
    for _attempt in range(20):
        plan = TASKS[task](rng, depth, **options)
        units = haystack_units(haystack, np.random.default_rng([*key, 1]))
        text, tokens, spans, attachments = assemble(units, plan.inserts, length, counter, plan.head)
        if _answers_only_in_needles(text, plan, spans, task):
            return NeedleSample(
                task=task,
                text=text,
                question=plan.question,
                answers=plan.answers,
                depth=depth,
                length=length,
                tokens=tokens,
                needle_spans=tuple(spans),
                attachments=tuple(attachments),
                seed=seed,
                index=index,
            )
    raise DataError(haystack, f"could not place {task} answers that occur nowhere else")


def _answers_only_in_needles(
    text: str, plan: _Plan, spans: list[tuple[int, int]], task: str
) -> bool:
    """Each answer (each label, for multimodal tasks) occurs inside the target needles only."""
    if task.startswith("mm_"):
        label = plan.inserts[0].attachment[1]  # type: ignore[index]
        return _occurrences(text, label) == [spans[0][0]]
    for answer in plan.answers:
        for pos in _occurrences(text, answer):
            if not any(a <= pos < b for a, b in spans):
                return False
    return True


def _occurrences(text: str, word: str) -> list[int]:
    """Start offsets of ``word`` in ``text`` as a whole word."""
    return [
        m.start() for m in re.finditer(rf"(?<![A-Za-z0-9]){re.escape(word)}(?![A-Za-z0-9])", text)
    ]


def depths_for(samples: int) -> list[float]:
    """``samples`` depths spread evenly over 0..1, both ends included."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    return [0.5] if samples == 1 else [i / (samples - 1) for i in range(samples)]


def make_samples(
    task: str,
    length: int,
    samples: int,
    *,
    seed: int = 0,
    haystack: HaystackKind = "filler",
    counter: TokenCounter | None = None,
    **options: object,
) -> Iterator[NeedleSample]:
    """``samples`` samples of ``task`` at ``length``, depths spread evenly over 0..1."""
    for i, depth in enumerate(depths_for(samples)):
        yield make_sample(
            task, length, depth, seed=seed, index=i, haystack=haystack, counter=counter, **options
        )

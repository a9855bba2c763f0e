"""Review sentences with sentiment labels: a SYNTHETIC text set made by this module.

No download and no real reviews: every sentence is built from templates, and its label
follows from a few rules of how sentiment composes, so that reading word order matters.

* A clause is ``subject verb [negation] [intensifier] adjective``, e.g. "the plot was not
  very clever". Its polarity is the adjective's, flipped by a negation ("not bad" is
  positive, "never really good" is negative); intensifiers ("very", "truly") and softeners
  ("a bit") keep it. Negations often sit two words away from the adjective, so a bigram
  sees "very good" in both "very good" and "not very good".
* A contrast takes the sentiment of its main clause: "X, but Y" and "although X, Y" take
  Y's; "X, even though Y" takes X's. The two clauses often disagree, so half the sentiment
  words of such a sentence point the wrong way and only their order tells which half counts.
* Some sentences add a neutral frame ("honestly ,", "i have to say") or a second clause of
  the same polarity joined by "and".

Adjectives are balanced between the classes and every rule is as likely with either
polarity, so the words alone say little: a bag-of-words model is clearly weaker than a
model that reads the sentence in order. The set is deterministic for a given seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from longmm.data.schema import TEXT, Sample, SourceData

NAME = "sentiment"
CLASSES = ["negative", "positive"]
DEFAULT_SIZE = 4000

SUBJECTS = (
    "the movie",
    "this film",
    "the plot",
    "the acting",
    "the soundtrack",
    "the ending",
    "the dialogue",
    "the story",
    "the cast",
    "this phone",
    "the battery",
    "this laptop",
    "the screen",
    "the camera",
    "the service",
    "the remote",
    "the keyboard",
    "this blender",
    "the delivery",
    "the price",
)
VERBS = ("is", "was", "felt", "seemed", "looked", "turned out")
POSITIVE = (
    "good",
    "great",
    "excellent",
    "wonderful",
    "brilliant",
    "charming",
    "delightful",
    "solid",
    "impressive",
    "enjoyable",
    "clever",
    "reliable",
    "beautiful",
    "fun",
)
NEGATIVE = (
    "bad",
    "terrible",
    "awful",
    "boring",
    "dull",
    "disappointing",
    "weak",
    "clumsy",
    "slow",
    "flimsy",
    "bland",
    "annoying",
    "mediocre",
    "cheap",
)
INTENSIFIERS = ("very", "really", "extremely", "truly", "so", "incredibly", "pretty")
SOFTENERS = ("a bit", "somewhat", "rather", "fairly")
NEGATED_INTENSIFIERS = ("very", "really", "so", "that", "too", "particularly")
NEGATIONS = ("not", "never", "not at all")  # "not at all" goes after the adjective
CONTRAST_AGREES = 0.2  # share of contrasts whose discounted clause has the same sentiment
FRAMES = ("honestly ,", "overall ,", "i have to say", "to be fair ,", "in the end ,", "frankly ,")


@dataclass(frozen=True)
class Clause:
    text: str
    positive: bool


def make_clause(rng: np.random.Generator, positive: bool) -> Clause:
    """A clause whose sentiment is ``positive``: the adjective's polarity, maybe negated."""
    negated = bool(rng.random() < 0.5)
    adjective = str(rng.choice(POSITIVE if positive != negated else NEGATIVE))
    words = [str(rng.choice(SUBJECTS)), str(rng.choice(VERBS))]
    negation = str(rng.choice(NEGATIONS)) if negated else ""
    if negation == "never" and words[1] not in ("is", "was"):
        negation = "not"  # "was never good", but not "seemed never good"
    if negation == "not at all":
        words += ["not", adjective, "at all"]
        return Clause(" ".join(words), positive)
    if negation:
        words.append(negation)
    degree = rng.random()
    if negated and degree < 0.75:
        # Mostly "not very good": the negation two words from the adjective, out of a bigram's
        # reach, and "very good" then says nothing alone.
        words.append(str(rng.choice(NEGATED_INTENSIFIERS)))
    elif not negated and degree < 0.5:
        words.append(str(rng.choice(INTENSIFIERS)))
    elif not negated and degree < 0.65:
        words.append(str(rng.choice(SOFTENERS)))
    words.append(adjective)
    return Clause(" ".join(words), positive)


def make_sentence(rng: np.random.Generator, positive: bool) -> tuple[str, str]:
    """One sentence with sentiment ``positive``, and the name of the rule that built it."""
    form = rng.random()
    # The clause a contrast discounts mostly disagrees with the sentence: its words then
    # point the wrong way, and only the order of the clauses tells which one counts.
    other = make_clause(rng, positive if rng.random() < CONTRAST_AGREES else not positive)
    if form < 0.3:
        text, rule = make_clause(rng, positive).text, "clause"
    elif form < 0.6:
        text, rule = f"{other.text} , but {make_clause(rng, positive).text}", "but"
    elif form < 0.75:
        text, rule = f"although {other.text} , {make_clause(rng, positive).text}", "although"
    elif form < 0.9:
        text, rule = f"{make_clause(rng, positive).text} , even though {other.text}", "even though"
    else:
        first, second = make_clause(rng, positive), make_clause(rng, positive)
        text, rule = f"{first.text} and {second.text}", "and"
    if rng.random() < 0.2:
        text = f"{rng.choice(FRAMES)} {text}"
    return f"{text} .", rule


def make_sentiment(n: int = DEFAULT_SIZE, seed: int = 0) -> list[Sample]:
    """``n`` distinct sentences, half positive, in a seeded random order."""
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    samples: list[Sample] = []
    while len(samples) < n:
        positive = len(samples) % 2 == 0
        text, rule = make_sentence(rng, positive)
        if text in seen:
            continue
        seen.add(text)
        label = CLASSES[int(positive)]
        samples.append(Sample(inputs={TEXT: text}, targets={"label": label}, meta={"rule": rule}))
    order = rng.permutation(n)
    return [
        Sample(inputs=s.inputs, targets=s.targets, where=f"{NAME}[{i}]", meta=s.meta)
        for i, s in enumerate(samples[j] for j in order)
    ]


def read_sentiment(n: int = DEFAULT_SIZE, seed: int = 0) -> SourceData:
    return SourceData(
        splits={"all": make_sentiment(n, seed)},
        classes=list(CLASSES),
        description=(
            f"{NAME}: {n:,} SYNTHETIC review sentences made by longmm's own templates "
            "(negation, intensifiers, contrast clauses); not real reviews"
        ),
    )

"""``numbers``: a SYNTHETIC English -> German parallel set of number, date, time, price and
quantity phrases, rendered in words by ``num2words`` (``lang="en"`` and ``lang="de"``).

Made by our own templates, deterministic by seed; a smoke set for translation models, not
natural text. It still asks for real translation skills: German number words reorder the
English ones ("forty-two" -> "zweiundvierzig"), dates take dative ordinals ("on the third of
May" -> "am dritten Mai"), and "half past four" is "halb fünf". Counts stay at 2 or more so
that every phrase is plural and the German articles need no case agreement.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from num2words import num2words

from longmm.data.schema import TEXT, Sample, SourceData

# (English plural, German plural)
NOUNS = (
    ("apples", "Äpfel"),
    ("books", "Bücher"),
    ("cars", "Autos"),
    ("children", "Kinder"),
    ("dogs", "Hunde"),
    ("houses", "Häuser"),
    ("chairs", "Stühle"),
    ("birds", "Vögel"),
    ("bottles", "Flaschen"),
    ("flowers", "Blumen"),
    ("students", "Studenten"),
    ("trees", "Bäume"),
    ("boats", "Boote"),
    ("tickets", "Fahrkarten"),
    ("letters", "Briefe"),
)
# (English frame, German frame); {x} is the counted noun phrase.
COUNT_FRAMES = (
    ("{x}", "{x}"),
    ("We have {x}.", "Wir haben {x}."),
    ("She bought {x}.", "Sie kaufte {x}."),
    ("I see {x}.", "Ich sehe {x}."),
    ("There are {x} here.", "Hier gibt es {x}."),
    ("They need {x}.", "Sie brauchen {x}."),
)
MONTHS = (
    ("January", "Januar"),
    ("February", "Februar"),
    ("March", "März"),
    ("April", "April"),
    ("May", "Mai"),
    ("June", "Juni"),
    ("July", "Juli"),
    ("August", "August"),
    ("September", "September"),
    ("October", "Oktober"),
    ("November", "November"),
    ("December", "Dezember"),
)
UNITS = (
    ("kilograms", "Kilogramm"),
    ("kilometres", "Kilometer"),
    ("litres", "Liter"),
    ("metres", "Meter"),
    ("minutes", "Minuten"),
    ("hours", "Stunden"),
    ("days", "Tage"),
    ("years", "Jahre"),
)
FLOORS = (("floor", "der {o} Stock"), ("day", "der {o} Tag"), ("place", "der {o} Platz"))

Pair = tuple[str, str]


def _en(n: int) -> str:
    return num2words(n, lang="en")


def _de(n: int) -> str:
    return num2words(n, lang="de")


def _count(rng: random.Random) -> int:
    """Mostly small numbers, some hundreds and thousands: 2 .. 9999."""
    top = rng.choice((20, 100, 1000, 10000))
    return rng.randrange(2, top)


def _counted(rng: random.Random) -> Pair:
    n = _count(rng)
    en_noun, de_noun = rng.choice(NOUNS)
    en_frame, de_frame = rng.choice(COUNT_FRAMES)
    return (
        en_frame.format(x=f"{_en(n)} {en_noun}"),
        de_frame.format(x=f"{_de(n)} {de_noun}"),
    )


def _date(rng: random.Random) -> Pair:
    day = rng.randrange(1, 29)
    en_month, de_month = rng.choice(MONTHS)
    year = rng.randrange(1900, 2031)
    en_day = num2words(day, lang="en", to="ordinal")
    de_day = num2words(day, lang="de", to="ordinal") + "n"  # dative after "am"
    en_year = num2words(year, lang="en", to="year")
    de_year = num2words(year, lang="de", to="year")
    if rng.random() < 0.5:
        return f"on the {en_day} of {en_month} {en_year}", f"am {de_day} {de_month} {de_year}"
    return f"on the {en_day} of {en_month}", f"am {de_day} {de_month}"


def _time(rng: random.Random) -> Pair:
    hour = rng.randrange(2, 13)
    if rng.random() < 0.5:
        return f"at {_en(hour)} o'clock", f"um {_de(hour)} Uhr"
    # "half past four" is "halb fünf" (half way to five); half past twelve is "halb eins".
    after = 1 if hour == 12 else hour + 1
    return f"at half past {_en(hour)}", f"um halb {_de(after)}"


def _price(rng: random.Random) -> Pair:
    euros, cents = rng.randrange(2, 1000), rng.randrange(2, 100)
    if rng.random() < 0.5:
        return f"{_en(euros)} euros", f"{_de(euros)} Euro"
    return (
        f"{_en(euros)} euros and {_en(cents)} cents",
        f"{_de(euros)} Euro und {_de(cents)} Cent",
    )


def _quantity(rng: random.Random) -> Pair:
    n = _count(rng)
    en_unit, de_unit = rng.choice(UNITS)
    return f"{_en(n)} {en_unit}", f"{_de(n)} {de_unit}"


def _ordinal(rng: random.Random) -> Pair:
    n = rng.randrange(1, 100)
    en_noun, de_frame = rng.choice(FLOORS)
    en = f"the {num2words(n, lang='en', to='ordinal')} {en_noun}"
    return en, de_frame.format(o=num2words(n, lang="de", to="ordinal"))


KINDS: tuple[Callable[[random.Random], Pair], ...] = (
    _counted,
    _counted,
    _date,
    _time,
    _price,
    _quantity,
    _ordinal,
)


def make_number_pairs(n: int = 6000, seed: int = 0) -> list[Pair]:
    """``n`` distinct (English, German) phrase pairs, the same for the same seed."""
    rng = random.Random(seed)
    seen: set[str] = set()
    pairs: list[Pair] = []
    attempts = 0
    while len(pairs) < n:
        attempts += 1
        if attempts > 50 * n:
            raise ValueError(f"could not make {n} distinct phrases (got {len(pairs)})")
        en, de = rng.choice(KINDS)(rng)
        if en in seen:  # a phrase in two splits would leak the test set into training
            continue
        seen.add(en)
        pairs.append((en, de))
    return pairs


def read_numbers(n: int = 6000, seed: int = 0) -> SourceData:
    """The pairs as samples (``text`` -> ``target_text``) under ``"all"``, to be split."""
    samples = [
        Sample(inputs={TEXT: en}, targets={"target_text": de}, where=f"numbers:{i + 1}")
        for i, (en, de) in enumerate(make_number_pairs(n, seed))
    ]
    return SourceData(
        splits={"all": samples},
        description=(
            f"numbers: {n} SYNTHETIC English -> German number, date, time, price and quantity "
            "phrases rendered with num2words (own templates; not natural text)"
        ),
    )

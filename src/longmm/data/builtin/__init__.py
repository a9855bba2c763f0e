"""Embedded data sets, made by our own code or shipped inside an installed package."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from longmm.data.schema import SourceData


@dataclass(frozen=True)
class Builtin:
    name: str
    modality: str
    description: str
    read: Callable[[], SourceData]


def _digits() -> SourceData:
    from longmm.data.builtin.digits import read_digits

    return read_digits()


def _spoken_digits() -> SourceData:
    from longmm.data.builtin.spoken_digits import make_spoken_digits

    return SourceData(
        splits={"all": make_spoken_digits()},
        classes=[str(d) for d in range(10)],
        description="spoken-digits: SYNTHETIC spoken digits 0-9 made by longmm's own synthesizer",
    )


def _sentiment() -> SourceData:
    from longmm.data.builtin.sentiment import read_sentiment

    return read_sentiment()


def _numbers() -> SourceData:
    from longmm.data.builtin.numbers import read_numbers

    return read_numbers()


BUILTINS: dict[str, Builtin] = {
    b.name: b
    for b in (
        Builtin(
            "digits", "image", "1,797 real 8x8 handwritten digit scans (scikit-learn)", _digits
        ),
        Builtin(
            "spoken-digits",
            "audio",
            "2,000 synthetic spoken digits 0-9, varied pitch, rate, timbre and noise (own code)",
            _spoken_digits,
        ),
        Builtin(
            "sentiment",
            "text",
            "4,000 synthetic review sentences, negative/positive, built from templates with "
            "negation, intensifiers and contrast clauses (own code)",
            _sentiment,
        ),
        Builtin(
            "numbers",
            "parallel",
            "6,000 synthetic English -> German number, date, time, price and quantity phrases "
            "rendered with num2words (own templates)",
            _numbers,
        ),
    )
}

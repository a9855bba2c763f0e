"""What every source shares: the bad-input policy and label bookkeeping."""

from __future__ import annotations

import re

from longmm.data.schema import BadItem
from longmm.errors import DataError


class Problems:
    """Raise on bad input, or, with ``skip_bad``, record it so that the report can list it.

    Never a silent drop: every skipped item is kept with where it came from and why.
    """

    def __init__(self, skip_bad: bool = False) -> None:
        self.skip_bad = skip_bad
        self.items: list[BadItem] = []

    def bad(self, where: str, reason: str) -> None:
        if not self.skip_bad:
            raise DataError(where, reason)
        self.items.append(BadItem(where, reason))


def natural_key(text: str) -> tuple:
    """Sort "2" before "10" and "img2" before "img10"."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


def sorted_classes(labels: set[str] | list[str]) -> list[str]:
    return sorted(set(labels), key=natural_key)

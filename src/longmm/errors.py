"""Errors that name what went wrong and where."""

from __future__ import annotations


class LongmmError(Exception):
    """Base class for errors that longmm reports to users without a traceback."""


class DataError(LongmmError, ValueError):
    """Bad input data. ``where`` names the file and, when known, the line or field."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"{where}: {reason}")


class CheckpointError(LongmmError):
    """A checkpoint or weights file that cannot be read."""

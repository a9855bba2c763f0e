"""What every source shares: the bad-input policy, where-strings, file reading, labels."""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from longmm.data.schema import BadItem, Sample, SourceData
from longmm.errors import DataError

PathLike = str | os.PathLike[str]


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


def at(path: PathLike, line: int | None = None, field: str | None = None) -> str:
    """Where an item lies, as error messages show it: ``file:line: field 'x'``."""
    where = str(path) if line is None else f"{path}:{line}"
    return where if field is None else f"{where}: field '{field}'"


def to_source(
    where: PathLike, splits: dict[str, list[Sample]], problems: Problems, description: str
) -> SourceData:
    """Bundle what a reader found; classes are the sorted labels, if the samples have any."""
    if not any(splits.values()):
        raise DataError(str(where), f"no readable samples ({len(problems.items)} skipped)")
    labels = {
        s.targets["label"] for group in splits.values() for s in group if "label" in s.targets
    }
    return SourceData(
        splits=splits,
        classes=sorted_classes(labels) if labels else None,
        skipped=list(problems.items),
        description=description,
    )


def split_counts(splits: dict[str, list[Sample]]) -> str:
    return ", ".join(f"{name} {len(samples)}" for name, samples in splits.items())


def existing_folder(root: PathLike) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataError(str(root), "no such folder")
    return root


def read_text(path: PathLike) -> str:
    """The whole file as UTF-8 text (a byte-order mark is dropped), gunzipped if ``.gz``."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        return raw.decode("utf-8-sig")
    except FileNotFoundError as err:
        raise DataError(str(path), "no such file") from err
    except UnicodeDecodeError as err:
        raise DataError(str(path), f"not UTF-8 text (bad byte at offset {err.start})") from err
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise DataError(str(path), f"cannot read: {err}") from err


def text_lines(path: PathLike) -> list[str]:
    """Lines without their ``\\n``/``\\r\\n``; only ``\\n`` splits (unlike ``str.splitlines``)."""
    lines = read_text(path).split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def jsonl_objects(path: PathLike, problems: Problems) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line; bad lines go to ``problems``."""
    for number, line in enumerate(text_lines(path), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            problems.bad(at(path, number), f"invalid JSON: {err.msg} at column {err.colno}")
            continue
        if not isinstance(obj, dict):
            problems.bad(at(path, number), f"expected a JSON object, got {type(obj).__name__}")
            continue
        yield number, obj


def label_text(value: Any) -> str:
    """A label as ``str``; only strings and integers are labels (``True`` or ``0.5`` are not)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"a label must be a string or an integer, got {value!r}")
    text = str(value)
    if not text.strip():
        raise ValueError("empty label")
    return text


# ---- tables ------------------------------------------------------------------------------

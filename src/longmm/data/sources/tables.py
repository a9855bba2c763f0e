"""Text tables (CSV, TSV, JSONL) and the line-reading helpers the other text readers share."""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from longmm.data.schema import TEXT, Sample, SourceData
from longmm.data.sources.base import (
    PathLike,
    Problems,
    at,
    existing_folder,
    jsonl_objects,
    label_text,
    read_text,
    sorted_classes,
    split_counts,
    to_source,
)
from longmm.errors import DataError

TABLE_FORMATS = ("csv", "tsv", "jsonl")
Column = str | int


def table_format(path: PathLike) -> str:
    """``csv``, ``tsv`` or ``jsonl`` from the file name (``.gz`` allowed)."""
    name = Path(path).name.lower().removesuffix(".gz")
    fmt = name.rsplit(".", 1)[-1] if "." in name else ""
    if fmt not in TABLE_FORMATS:
        raise DataError(
            str(path),
            f"unknown table format; name it .csv, .tsv or .jsonl or pass "
            f"format= one of {', '.join(TABLE_FORMATS)}",
        )
    return fmt


def read_table(
    path: PathLike,
    *,
    text_column: Column = "text",
    label_column: Column | None = "label",
    header: bool | None = None,
    format: str | None = None,
    skip_bad: bool = False,
) -> SourceData:
    """A CSV, TSV or JSONL table of texts and (optionally) labels, all under ``"all"``.

    ``header=None`` detects a CSV/TSV header: the first row is one when it holds a named
    column. With only integer columns and a header line, pass ``header=True``.
    """
    problems = Problems(skip_bad)
    samples = _read_table(Path(path), text_column, label_column, header, format, problems)
    return to_source(path, {"all": samples}, problems, f"table {path}: {len(samples)} rows")


def read_table_splits(
    root: PathLike,
    train: str = "train.tsv",
    val: str | None = "dev.tsv",
    test: str | None = "test.tsv",
    *,
    text_column: Column = "text",
    label_column: Column | None = "label",
    header: bool | None = None,
    format: str | None = None,
    skip_bad: bool = False,
) -> SourceData:
    """A folder of split tables (``val`` and ``test`` optional); their labels must be train's."""
    root = existing_folder(root)
    problems = Problems(skip_bad)
    splits: dict[str, list[Sample]] = {}
    for split, name in (("train", train), ("val", val), ("test", test)):
        path = _existing(root, name) if name else None
        if path is None and split == "train":
            raise DataError(str(root / train), "no such file (the train split is required)")
        if path is not None:
            splits[split] = _read_table(path, text_column, label_column, header, format, problems)
    if label_column is not None:
        known = {s.targets["label"] for s in splits["train"]}
        for split in ("val", "test"):
            if split in splits:
                splits[split] = _known_labels(splits[split], known, label_column, problems)
    return to_source(root, splits, problems, f"table splits {root}: {split_counts(splits)}")


def _existing(root: Path, name: str) -> Path | None:
    for path in (root / name, root / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def _known_labels(
    samples: list[Sample], known: set[str], column: Column, problems: Problems
) -> list[Sample]:
    listed = ", ".join(repr(k) for k in sorted_classes(known))
    kept = []
    for sample in samples:
        label = sample.targets["label"]
        if label in known:
            kept.append(sample)
        else:
            problems.bad(
                f"{sample.where}: field '{column}'",
                f"unknown label {label!r}; the train split has {listed}",
            )
    return kept


def _read_table(
    path: Path,
    text_column: Column,
    label_column: Column | None,
    header: bool | None,
    format: str | None,
    problems: Problems,
) -> list[Sample]:
    fmt = format or table_format(path)
    columns = {"text": text_column} | ({"label": label_column} if label_column is not None else {})
    records: Iterable[tuple[int, dict[str, Any] | list[str]]]
    if fmt == "jsonl":
        if any(isinstance(c, int) for c in columns.values()):
            raise DataError(str(path), "JSONL columns are picked by name, not by index")
        records = jsonl_objects(path, problems)
    elif fmt in ("csv", "tsv"):
        columns, records = _delimited_rows(path, fmt, columns, header, problems)
    else:
        raise DataError(str(path), f"unknown table format {fmt!r}; one of {TABLE_FORMATS}")
    names = {"text": text_column, "label": label_column}  # as the user named them
    samples = []
    for number, record in records:
        values = _pick(record, columns, names, path, number, problems)
        if values is not None:
            text = values.pop("text")
            samples.append(Sample(inputs={TEXT: text}, targets=values, where=at(path, number)))
    return samples


def _pick(
    record: dict[str, Any] | list[str],
    columns: dict[str, Column],
    names: dict[str, Column | None],
    path: Path,
    number: int,
    problems: Problems,
) -> dict[str, str] | None:
    """The wanted fields of one record, checked; ``None`` after reporting a bad field."""
    values = {}
    for key, column in columns.items():
        field_at = at(path, number, str(names[key]))
        try:
            value = record[column]  # type: ignore[index]
        except (KeyError, IndexError):
            problems.bad(field_at, f"missing (the row has {len(record)} fields)")
            return None
        try:
            if key == "label":
                values[key] = label_text(value)
            elif not isinstance(value, str) or not value.strip():
                raise ValueError(f"expected non-empty text, got {value!r}")
            else:
                values[key] = value
        except ValueError as err:
            problems.bad(field_at, str(err))
            return None
    return values


def _delimited_rows(
    path: Path, fmt: str, columns: dict[str, Column], header: bool | None, problems: Problems
) -> tuple[dict[str, Column], Iterator[tuple[int, list[str]]]]:
    """Column indices (names resolved through the header) and the numbered data rows."""
    # TSV has no quoting: SST-2-style text keeps its quote characters verbatim.
    options: dict[str, Any] = (
        {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if fmt == "tsv" else {"delimiter": ","}
    )
    reader = csv.reader(io.StringIO(read_text(path), newline=""), **options)
    rows = _numbered_rows(reader, path, problems)
    first = next(rows, None)
    if first is None:
        raise DataError(str(path), "empty table")
    names = [c for c in columns.values() if isinstance(c, str)]
    if header is None:
        header = any(name in first[1] for name in names)
    if not header:
        if names:
            raise DataError(
                str(path),
                f"columns {names} need a header line, and the first row "
                f"{first[1]} is not one; use header=True or integer columns",
            )
        return dict(columns), itertools.chain([first], rows)
    heading = first[1]
    for name in names:
        if name not in heading:
            raise DataError(at(path, first[0]), f"no column {name!r} in the header {heading}")
    resolved = {k: heading.index(c) if isinstance(c, str) else c for k, c in columns.items()}
    return resolved, rows


def _numbered_rows(reader: Any, path: Path, problems: Problems) -> Iterator[tuple[int, list[str]]]:
    """Non-empty rows with the line each starts on (a quoted field may span lines)."""
    line = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            problems.bad(at(path, line), f"malformed row: {err}")
            row = []
        if row:
            yield line, row
        line = reader.line_num + 1

"""Multimodal JSONL manifests: one object a line with text, image and/or audio, and targets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from longmm.data.schema import AUDIO, IMAGE, SPLITS, TEXT, Sample, SourceData
from longmm.data.sources.audio import decode_audio
from longmm.data.sources.base import (
    PathLike,
    Problems,
    at,
    jsonl_objects,
    label_text,
    split_counts,
    to_source,
)
from longmm.data.sources.images import decode_image
from longmm.errors import DataError

DECODERS: dict[str, Callable[[Path], Any]] = {IMAGE: decode_image, AUDIO: decode_audio}


class _BadField(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field


def read_manifest(
    path: PathLike, *, skip_bad: bool = False, base_dir: PathLike | None = None
) -> SourceData:
    """Lines like ``{"image": "img/1.png", "text": "...", "label": "cat", "split": "train"}``.

    ``image`` and ``audio`` paths are relative to ``base_dir`` (default: the manifest's
    folder). Keys other than the modalities, ``label`` and ``split`` become extra targets.
    Every line has a ``split`` or none does (then everything is under ``"all"``).
    """
    path = Path(path)
    base = Path(base_dir) if base_dir is not None else path.parent
    problems = Problems(skip_bad)
    rows: list[tuple[str | None, Sample]] = []
    for number, obj in jsonl_objects(path, problems):
        where = at(path, number)
        try:
            rows.append(_sample(obj, base, where))
        except _BadField as err:
            problems.bad(at(path, number, err.field), str(err))
        except ValueError as err:
            problems.bad(where, str(err))
    splits = _group(path, rows)
    return to_source(path, splits, problems, f"manifest {path}: {split_counts(splits)}")


def _sample(obj: dict[str, Any], base: Path, where: str) -> tuple[str | None, Sample]:
    """The line's split (``None`` if it has none) and its sample."""
    fields = {key: value for key, value in obj.items() if value is not None}
    inputs: dict[str, Any] = {}
    if TEXT in fields:
        text = fields.pop(TEXT)
        if not isinstance(text, str) or not text.strip():
            raise _BadField(TEXT, f"expected non-empty text, got {text!r}")
        inputs[TEXT] = text
    for modality, decode in DECODERS.items():
        if modality in fields:
            inputs[modality] = _decode(fields.pop(modality), modality, base, decode)
    if not inputs:
        raise ValueError(f"no input: a line needs at least one of {TEXT!r}, {IMAGE!r}, {AUDIO!r}")
    split = fields.pop("split", None)
    if split is not None and split not in SPLITS:
        raise _BadField("split", f"{split!r} is not one of {', '.join(SPLITS)}")
    targets = {}
    for key, value in fields.items():
        try:
            targets[key] = label_text(value) if key == "label" else _extra(value)
        except ValueError as err:
            raise _BadField(key, str(err)) from None
    return split, Sample(inputs=inputs, targets=targets, where=where)


def _decode(value: Any, modality: str, base: Path, decode: Callable[[Path], Any]) -> Any:
    if not isinstance(value, str) or not value:
        raise _BadField(modality, f"expected a file path, got {value!r}")
    file = base / value
    if not file.is_file():
        raise _BadField(modality, f"no such file: {file}")
    try:
        return decode(file)
    except DataError as err:
        raise _BadField(modality, str(err)) from None


def _extra(value: Any) -> str | int | float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"an extra target must be a string or a number, got {value!r}")
    return value


def _group(path: Path, rows: list[tuple[str | None, Sample]]) -> dict[str, list[Sample]]:
    with_split = [sample for split, sample in rows if split is not None]
    if not with_split:
        return {"all": [sample for _, sample in rows]}
    if len(with_split) < len(rows):
        first = next(sample for split, sample in rows if split is None)
        raise DataError(
            str(path),
            f"{len(with_split)} lines have a 'split' and {len(rows) - len(with_split)} do not "
            f"(first: {first.where}); give every line a split, or none",
        )
    groups = {name: [sample for split, sample in rows if split == name] for name in SPLITS}
    return {name: samples for name, samples in groups.items() if samples}

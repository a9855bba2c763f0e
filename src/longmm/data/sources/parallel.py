"""Parallel text for translation: two files, one sentence a line, aligned line by line."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from longmm.data.schema import TEXT, Sample, SourceData
from longmm.data.sources.base import (
    PathLike,
    Problems,
    at,
    existing_folder,
    split_counts,
    text_lines,
    to_source,
)
from longmm.errors import DataError

MULTI30K_SPLITS = {"train": "train", "val": "val", "test": "test_2016_flickr"}


def read_parallel(
    source_path: PathLike, target_path: PathLike, *, skip_bad: bool = False
) -> SourceData:
    """Sentence pairs under ``"all"``: ``inputs["text"]`` and ``targets["target_text"]``."""
    problems = Problems(skip_bad)
    samples = _pairs(Path(source_path), Path(target_path), problems)
    description = f"parallel text {source_path} -> {target_path}: {len(samples)} pairs"
    return to_source(source_path, {"all": samples}, problems, description)


def read_parallel_dir(
    root: PathLike,
    src_lang: str,
    tgt_lang: str,
    splits: Mapping[str, str] | None = None,
    *,
    skip_bad: bool = False,
) -> SourceData:
    """``{prefix}.{lang}[.gz]`` files in ``root`` or ``root/raw``; ``splits`` maps split to prefix.

    The default splits are Multi30k's: ``train``, ``val`` and ``test_2016_flickr``.
    """
    root = existing_folder(root)
    problems = Problems(skip_bad)
    found = {
        split: _pairs(_find(root, prefix, src_lang), _find(root, prefix, tgt_lang), problems)
        for split, prefix in (splits or MULTI30K_SPLITS).items()
    }
    description = f"parallel text {src_lang} -> {tgt_lang} at {root}: {split_counts(found)}"
    return to_source(root, found, problems, description)


def _find(root: Path, prefix: str, lang: str) -> Path:
    names = (f"{prefix}.{lang}", f"{prefix}.{lang}.gz")
    for folder in (root, root / "raw"):
        for name in names:
            if (folder / name).is_file():
                return folder / name
    raise DataError(str(root), f"no {' or '.join(names)} here or in raw/")


def _pairs(source: Path, target: Path, problems: Problems) -> list[Sample]:
    sources, targets = text_lines(source), text_lines(target)
    if len(sources) != len(targets):
        raise DataError(
            str(source),
            f"{len(sources)} lines, but {target} has {len(targets)}: the files must be aligned",
        )
    samples = []
    for number, (text, target_text) in enumerate(zip(sources, targets, strict=True), start=1):
        empty = [path for path, line in ((source, text), (target, target_text)) if not line.strip()]
        if empty:
            problems.bad(at(empty[0], number), "empty line")
            continue
        samples.append(
            Sample(
                inputs={TEXT: text}, targets={"target_text": target_text}, where=at(source, number)
            )
        )
    return samples

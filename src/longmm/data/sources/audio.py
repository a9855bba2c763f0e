"""Audio sources: class folders, or flat files named FSDD style ``{label}_{speaker}_{take}.wav``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from longmm.data.schema import AUDIO, SourceData, Waveform
from longmm.data.sources.base import (
    PathLike,
    Problems,
    existing_folder,
    natural_key,
    split_counts,
    to_source,
)
from longmm.data.sources.images import class_files, decoded_samples
from longmm.errors import DataError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
FSDD_NAME = re.compile(r"(?P<label>[^_]+)_(?P<speaker>[^_]+)_(?P<take>\d+)")
FSDD_PATTERN = "{label}_{speaker}_{take}.wav, e.g. 7_jackson_32.wav"


def decode_audio(path: PathLike) -> Waveform:
    """Mono float32 samples (channels averaged) at the file's own rate."""
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # (T, channels)
    except (
        RuntimeError,
        OSError,
        ValueError,
        TypeError,
    ) as err:  # LibsndfileError is a RuntimeError
        raise DataError(str(path), f"not readable audio ({err})") from err
    if data.shape[0] == 0:
        raise DataError(str(path), "no audio samples (empty recording)")
    samples = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    return Waveform(samples=np.ascontiguousarray(samples), sample_rate=int(rate))


def read_audio_folder(
    root: PathLike,
    *,
    skip_bad: bool = False,
    extensions: Sequence[str] = AUDIO_EXTENSIONS,
    test_takes: list[int] | None = None,
) -> SourceData:
    """Class folders ``root/<label>/*.wav``, or flat FSDD-named files in ``root``.

    With FSDD names, ``test_takes`` (FSDD's official test split is takes 0-4) puts those takes
    under ``test`` and the rest under ``train``; without it everything is under ``all``.
    """
    root = existing_folder(root)
    wanted = {e.lower() for e in extensions}
    flat = sorted(
        (p for p in root.iterdir() if p.is_file() and p.suffix.lower() in wanted),
        key=lambda p: natural_key(p.name),
    )
    problems = Problems(skip_bad)
    if flat:
        items = _fsdd_items(flat, problems)
        layout = "FSDD-named files"
    else:
        if test_takes is not None:
            raise DataError(str(root), f"test_takes needs flat files named {FSDD_PATTERN}")
        items = [(path, {"label": label}, {}) for label, path in class_files(root, extensions)]
        layout = "class folders"
    samples = decoded_samples(items, AUDIO, decode_audio, problems)
    if test_takes is None:
        splits = {"all": samples}
    else:
        test = set(test_takes)
        splits = {
            "train": [s for s in samples if s.meta["take"] not in test],
            "test": [s for s in samples if s.meta["take"] in test],
        }
    description = f"audio {layout} at {root}: {split_counts(splits)}"
    return to_source(root, splits, problems, description)


def _fsdd_items(
    paths: list[Path], problems: Problems
) -> list[tuple[Path, dict[str, Any], dict[str, Any]]]:
    items = []
    for path in paths:
        match = FSDD_NAME.fullmatch(path.stem)
        if match is None:
            problems.bad(str(path), f"file name does not match {FSDD_PATTERN}")
            continue
        targets = {"label": match["label"], "speaker": match["speaker"]}
        items.append((path, targets, {"take": int(match["take"])}))
    return items

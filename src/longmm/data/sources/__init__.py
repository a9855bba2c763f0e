"""Readers of standard data formats, each returning a ``SourceData``."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from longmm.data.schema import SourceData
from longmm.data.sources.audio import AUDIO_EXTENSIONS, decode_audio, read_audio_folder
from longmm.data.sources.base import PathLike
from longmm.data.sources.images import (
    IMAGE_EXTENSIONS,
    decode_image,
    read_cifar,
    read_image_folder,
    read_mnist,
)
from longmm.data.sources.manifest import read_manifest
from longmm.data.sources.parallel import read_parallel, read_parallel_dir
from longmm.data.sources.tables import read_table, read_table_splits
from longmm.errors import DataError

__all__ = [
    "FORMATS",
    "SourceFormat",
    "decode_audio",
    "decode_image",
    "detect_format",
    "read_audio_folder",
    "read_cifar",
    "read_image_folder",
    "read_manifest",
    "read_mnist",
    "read_parallel",
    "read_parallel_dir",
    "read_table",
    "read_table_splits",
]


@dataclass(frozen=True)
class SourceFormat:
    name: str
    description: str
    reader: Callable[..., SourceData]


FORMATS = [
    SourceFormat(
        "image-folder",
        "images in root/<class>/ or root/{train,val,test}/<class>/",
        read_image_folder,
    ),
    SourceFormat(
        "cifar", "CIFAR-10/100 python batches (data_batch_N, test_batch / train, test)", read_cifar
    ),
    SourceFormat(
        "mnist", "MNIST IDX files (train-/t10k-images-idx3-ubyte[.gz] + labels)", read_mnist
    ),
    SourceFormat(
        "audio-folder",
        "audio in root/<class>/ or flat {label}_{speaker}_{take}.wav",
        read_audio_folder,
    ),
    SourceFormat("table", "a CSV, TSV or JSONL file of text and label columns", read_table),
    SourceFormat(
        "table-splits", "a folder of tables: train.tsv, dev.tsv, test.tsv", read_table_splits
    ),
    SourceFormat(
        "parallel", "aligned {split}.{lang}[.gz] text files (Multi30k layout)", read_parallel_dir
    ),
    SourceFormat(
        "manifest", "JSONL lines with text / image / audio paths and targets", read_manifest
    ),
]

_TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl")
_IDX = re.compile(r".+[-.]idx\d-ubyte(\.gz)?")
_LANGUAGE_FILE = re.compile(r"(?P<prefix>.+)\.(?P<lang>[a-z]{2})")


def detect_format(path: PathLike) -> str:
    """The name of the ``FORMATS`` entry that can read ``path``, guessed from its layout."""
    path = Path(path)
    if path.is_file():
        fmt = _file_format(path)
    elif path.is_dir():
        fmt = _folder_format(path)
    else:
        raise DataError(str(path), "no such file or folder")
    if fmt is None:
        known = ", ".join(f.name for f in FORMATS)
        raise DataError(str(path), f"cannot tell its format; known formats: {known}")
    return fmt


def _file_format(path: Path) -> str | None:
    name = path.name.lower().removesuffix(".gz")
    if not name.endswith(_TABLE_SUFFIXES):
        return None
    if name.endswith(".jsonl"):
        opener = gzip.open if path.suffix == ".gz" else open
        try:
            with opener(path, "rt", encoding="utf-8-sig") as lines:
                obj = json.loads(next((line for line in lines if line.strip()), "{}"))
        except (OSError, ValueError):  # the reader will name the bad line
            return "table"
        if isinstance(obj, dict) and ("image" in obj or "audio" in obj):
            return "manifest"
    return "table"


def _folder_format(root: Path) -> str | None:
    names = {p.name for p in root.iterdir()}
    subfolders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if any(_IDX.fullmatch(name) for name in names):
        return "mnist"
    cifar = {"batches.meta", "cifar-10-batches-py", "cifar-100-python"}
    if names & cifar or {"meta", "train", "test"} <= names:
        return "cifar"
    if names & {"train.tsv", "train.csv", "train.tsv.gz", "train.csv.gz"}:
        return "table-splits"
    if _has_parallel_files(root) or _has_parallel_files(root / "raw"):
        return "parallel"
    if _has_files([root, *subfolders], AUDIO_EXTENSIONS):
        return "audio-folder"
    classes = [p for sub in subfolders for p in sub.iterdir() if p.is_dir()]
    if _has_files([*subfolders, *classes], IMAGE_EXTENSIONS):
        return "image-folder"
    return None


def _has_files(folders: list[Path], extensions: tuple[str, ...]) -> bool:
    return any(p.suffix.lower() in extensions for folder in folders for p in folder.iterdir())


def _has_parallel_files(folder: Path) -> bool:
    """Two or more ``{prefix}.{lang}`` files sharing a prefix, as in ``train.en``/``train.de``."""
    if not folder.is_dir():
        return False
    langs: dict[str, set[str]] = {}
    for path in folder.iterdir():
        if match := _LANGUAGE_FILE.fullmatch(path.name.removesuffix(".gz")):
            langs.setdefault(match["prefix"], set()).add(match["lang"])
    return any(len(found) >= 2 for found in langs.values())

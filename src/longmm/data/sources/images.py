"""Image sources: class folders, CIFAR python batches, MNIST IDX files."""

from __future__ import annotations

import codecs
import gzip
import pickle
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from longmm.data.schema import IMAGE, SPLITS, Sample, SourceData
from longmm.data.sources.base import (
    PathLike,
    Problems,
    existing_folder,
    natural_key,
    sorted_classes,
    split_counts,
    to_source,
)
from longmm.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


# ---- decoding and folders (shared with audio and manifests) ------------------------------


def decode_image(path: PathLike) -> np.ndarray:
    """A ``uint8`` array ``(H, W, C)``: ``C=1`` for single-channel images, else RGB."""
    try:
        with Image.open(path) as image:
            image.load()  # decodes now, so that a truncated file fails here
            return _to_array(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(str(path), f"not a readable image ({err})") from err


def _to_array(image: Image.Image) -> np.ndarray:
    if image.mode in ("1", "L"):
        return np.asarray(image.convert("L"))[:, :, None]
    if image.mode == "I" or image.mode.startswith("I;16"):
        wide = np.asarray(image).astype(np.int64).clip(0, 65535)  # 16-bit grey
        return (wide >> 8).astype(np.uint8)[:, :, None]
    return np.asarray(image.convert("RGB"))


def class_files(folder: Path, extensions: Sequence[str]) -> list[tuple[str, Path]]:
    """``(class, file)`` for ``folder/<class>/*`` with a wanted extension, in natural order."""
    wanted = {e.lower() for e in extensions}
    found = [
        (sub.name, path)
        for sub in _visible(folder)
        if sub.is_dir()
        for path in _visible(sub)
        if path.is_file() and path.suffix.lower() in wanted
    ]
    if not found:
        raise DataError(
            str(folder), f"no {'/'.join(sorted(wanted))} files in class folders <class>/<file>"
        )
    return found


def _visible(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if not p.name.startswith(".")),
        key=lambda p: natural_key(p.name),
    )


def decoded_samples(
    items: Iterable[tuple[Path, dict[str, Any], dict[str, Any]]],
    modality: str,
    decode: Callable[[Path], Any],
    problems: Problems,
) -> list[Sample]:
    """Decode ``(file, targets, meta)`` items; an unreadable file goes to ``problems``."""
    samples = []
    for path, targets, meta in items:
        try:
            value = decode(path)
        except DataError as err:
            problems.bad(err.where, err.reason)
            continue
        samples.append(
            Sample(inputs={modality: value}, targets=targets, where=str(path), meta=meta)
        )
    return samples


# ---- image folders -----------------------------------------------------------------------


def read_image_folder(
    root: PathLike, *, skip_bad: bool = False, extensions: Sequence[str] = IMAGE_EXTENSIONS
) -> SourceData:
    """``root/<class>/*.png``, or ``root/{train,val,test}/<class>/*`` when ``root/train`` exists."""
    root = existing_folder(root)
    problems = Problems(skip_bad)
    folders = (
        {split: root / split for split in SPLITS if (root / split).is_dir()}
        if (root / "train").is_dir()
        else {"all": root}
    )
    splits = {
        split: decoded_samples(
            ((path, {"label": label}, {}) for label, path in class_files(folder, extensions)),
            IMAGE,
            decode_image,
            problems,
        )
        for split, folder in folders.items()
    }
    return to_source(root, splits, problems, f"image folder {root}: {split_counts(splits)}")


# ---- CIFAR -------------------------------------------------------------------------------


def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    allowed = {"_reconstruct": multiarray._reconstruct, "scalar": multiarray.scalar}
    found = {
        (module, name): value
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name, value in allowed.items()
    }
    return found | {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, lists, dicts and strings, and refuses every other global."""

    # Python 3 writes ``bytes`` as ``_codecs.encode(text, "latin1")`` under protocol 2.
    ALLOWED: dict[tuple[str, str], Any] = _numpy_globals() | {("_codecs", "encode"): codecs.encode}

    def __init__(self, file: Any, name: str) -> None:
        super().__init__(file, encoding="bytes")
        self.name = name

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise DataError(
                self.name, f"refusing to unpickle {module}.{name}: a CIFAR batch holds only arrays"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(self.name, "refusing a persistent id: a CIFAR batch holds only arrays")


def _load_batch(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            obj = _ArrayUnpickler(fh, str(path)).load()
    except DataError:
        raise
    except Exception as err:  # a corrupt pickle raises many kinds of errors
        raise DataError(
            str(path), f"not a CIFAR python batch ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(obj, dict):
        raise DataError(str(path), f"expected a dict, got {type(obj).__name__}")
    return {_text(k): v for k, v in obj.items()}


def _text(value: Any) -> Any:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _cifar_layout(root: Path) -> tuple[Path, str, str, dict[str, list[Path]]]:
    """Folder, kind, class-name key and ``{split: batch files}`` of a CIFAR-10/100 copy."""
    for folder in (root, root / "cifar-10-batches-py", root / "cifar-100-python"):
        if (folder / "batches.meta").is_file():
            train = sorted(folder.glob("data_batch_*"), key=lambda p: natural_key(p.name))
            test = [folder / "test_batch"]
            return folder, "CIFAR-10", "label_names", {"train": train, "test": test}
        if (folder / "meta").is_file() and (folder / "train").is_file():
            test = [folder / "test"]
            return (
                folder,
                "CIFAR-100",
                "fine_label_names",
                {"train": [folder / "train"], "test": test},
            )
    raise DataError(
        str(root),
        "no CIFAR python batches: expected data_batch_1..5, test_batch and "
        "batches.meta (CIFAR-10) or train, test and meta (CIFAR-100)",
    )


def read_cifar(root: PathLike, *, skip_bad: bool = False) -> SourceData:
    """CIFAR-10 or CIFAR-100 (fine labels) python batches: ``train`` and, if present, ``test``."""
    folder, kind, names_key, files = _cifar_layout(existing_folder(root))
    meta_path = folder / ("batches.meta" if kind == "CIFAR-10" else "meta")
    meta = _load_batch(meta_path)
    if names_key not in meta:
        raise DataError(str(meta_path), f"no {names_key!r} in {sorted(meta)}")
    names = [str(_text(n)) for n in meta[names_key]]
    problems = Problems(skip_bad)
    splits = {
        split: [s for path in paths if path.is_file() for s in _cifar_batch(path, names, problems)]
        for split, paths in files.items()
    }
    splits = {split: samples for split, samples in splits.items() if samples}
    used = ", ".join(p.name for paths in files.values() for p in paths if p.is_file())
    description = f"{kind} at {folder} ({used}): {split_counts(splits)}, {len(names)} classes"
    data = to_source(folder, splits, problems, description)
    data.classes = sorted_classes(names)
    return data


def _cifar_batch(path: Path, names: list[str], problems: Problems) -> list[Sample]:
    batch = _load_batch(path)
    labels_key = "labels" if "labels" in batch else "fine_labels"
    if "data" not in batch or labels_key not in batch:
        raise DataError(str(path), f"expected keys 'data' and 'labels', found {sorted(batch)}")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[labels_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(str(path), f"'data' is {data.dtype} {data.shape}, expected uint8 (N, 3072)")
    if labels.shape != (len(data),):
        raise DataError(str(path), f"{len(data)} images but {labels.size} labels")
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # (N, H, W, C)
    samples = []
    for index, (image, label) in enumerate(zip(images, labels.tolist(), strict=True)):
        where = f"{path}: image {index}"
        if not isinstance(label, int) or not 0 <= label < len(names):
            problems.bad(where, f"label {label!r} is not a class index 0..{len(names) - 1}")
            continue
        samples.append(Sample(inputs={IMAGE: image}, targets={"label": names[label]}, where=where))
    return samples


# ---- MNIST -------------------------------------------------------------------------------

_IDX_IMAGES, _IDX_LABELS = 2051, 2049


def _idx_file(root: Path, prefix: str, kind: str) -> Path | None:
    """``train-images-idx3-ubyte`` or its ``.idx3-ubyte`` variant, raw or gzipped."""
    dims = 3 if kind == "images" else 1
    for stem in (f"{prefix}-{kind}-idx{dims}-ubyte", f"{prefix}-{kind}.idx{dims}-ubyte"):
        for path in (root / stem, root / f"{stem}.gz"):
            if path.is_file():
                return path
    return None


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX array of unsigned bytes, its shape taken from the header and checked."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as err:
        raise DataError(str(path), f"cannot read: {err}") from err
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(str(path), f"{len(raw)} bytes: shorter than an IDX header")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataError(str(path), f"magic number {found}, expected {magic}")
    shape = tuple(int(n) for n in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise DataError(
            str(path),
            f"{len(raw)} bytes, but the header ({' x '.join(map(str, shape))}) "
            f"needs {expected}: truncated or not this file",
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def read_mnist(root: PathLike, *, skip_bad: bool = False) -> SourceData:
    """MNIST IDX files: ``train``/``test`` when both image sets are there, else ``all``."""
    root = existing_folder(root)
    sets, unused = {}, []
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = _idx_file(root, prefix, "images"), _idx_file(root, prefix, "labels")
        if images is not None:
            sets[split] = (images, labels)
        elif labels is not None:
            unused.append(labels.name)
    if not sets:
        raise DataError(
            str(root),
            "no MNIST images: expected train-images-idx3-ubyte[.gz] or t10k-images-idx3-ubyte[.gz]",
        )
    if len(sets) == 1:
        sets = {"all": next(iter(sets.values()))}
    problems = Problems(skip_bad)
    splits = {split: _mnist_set(images, labels) for split, (images, labels) in sets.items()}
    used = ", ".join(f"{i.name} + {lab.name}" for i, lab in sets.values() if lab is not None)
    ignored = f"; ignored {', '.join(unused)} (no images)" if unused else ""
    description = f"MNIST at {root} ({used}): {split_counts(splits)}{ignored}"
    return to_source(root, splits, problems, description)


def _mnist_set(images_path: Path, labels_path: Path | None) -> list[Sample]:
    if labels_path is None:
        raise DataError(str(images_path), "no labels file beside it (…-labels-idx1-ubyte[.gz])")
    images = read_idx(images_path, _IDX_IMAGES)[..., None]  # (N, rows, cols, 1)
    labels = read_idx(labels_path, _IDX_LABELS)
    if len(images) != len(labels):
        raise DataError(
            str(images_path), f"{len(images)} images but {labels_path} has {len(labels)} labels"
        )
    names = [str(n) for n in range(256)]
    return [
        Sample(
            inputs={IMAGE: image},
            targets={"label": names[label]},
            where=f"{images_path}: image {i}",
        )
        for i, (image, label) in enumerate(zip(images, labels.tolist(), strict=True))
    ]

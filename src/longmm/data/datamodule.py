"""Lightning data modules: a source, seeded splits, label bookkeeping, and batch transforms.

``SourceDataModule`` holds what every kind of data shares; a subclass says how to read its
source and how to turn samples into tensors.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from longmm.data.builtin import BUILTINS
from longmm.data.image import ImageAugment, ImageNormalizer, NormalizeMode, to_chw_uint8
from longmm.data.schema import SPLITS, BadItem, Sample, SourceData
from longmm.data.sources.base import Problems
from longmm.data.splits import seeded_split
from longmm.errors import DataError
from longmm.io import atomic_write_json


class EpochSeededSampler(Sampler[int]):
    """A shuffle that depends only on (seed, epoch), so a resumed run sees the same order."""

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at each epoch start
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class SourceDataModule(L.LightningDataModule):
    """Reads a source once, splits it deterministically, and maps labels to indices."""

    def __init__(
        self,
        root: str | None = None,
        format: str = "auto",
        split: tuple[float, float, float] = (0.8, 0.1, 0.1),
        seed: int = 0,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        classes: list[str] | None = None,
        skip_bad: bool = False,
    ) -> None:
        super().__init__()
        self.root = root
        self.format = format
        self.split = tuple(split)
        self.seed = seed
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.given_classes = list(classes) if classes else None
        self.skip_bad = skip_bad
        self.datasets: dict[str, Dataset] = {}

    # -- reading -------------------------------------------------------------------------
    def read_source(self) -> SourceData:
        """Read the configured source; subclasses choose readers by ``self.format``."""
        if self.format in BUILTINS:
            return BUILTINS[self.format].read()
        raise DataError("data.format", f"unknown format {self.format!r}")

    def source_name(self) -> str:
        return self.format if self.format in BUILTINS else str(self.root)

    @cached_property
    def source(self) -> SourceData:
        return self.read_source()

    @cached_property
    def samples(self) -> dict[str, list[Sample]]:
        """Samples per split (train/val/test), unknown labels checked, empties refused."""
        problems = Problems(self.skip_bad)
        splits = self._split(self.source)
        classes = self.classes
        known = set(classes)
        checked: dict[str, list[Sample]] = {}
        for name in SPLITS:
            kept = []
            for sample in splits.get(name, []):
                label = sample.label
                if label is None:
                    problems.bad(sample.where, "field 'label': missing")
                elif str(label) not in known:
                    problems.bad(
                        sample.where,
                        f"field 'label': unknown label {label!r} (known: {', '.join(classes)})",
                    )
                else:
                    kept.append(sample)
            if not kept:
                raise DataError(
                    self.source_name(),
                    f"split {name!r} is empty ({len(splits.get(name, []))} samples before checks)",
                )
            checked[name] = kept
        self._split_problems = problems.items
        return checked

    @property
    def skipped(self) -> list[BadItem]:
        _ = self.samples
        return [*self.source.skipped, *self._split_problems]

    def _split(self, data: SourceData) -> dict[str, list[Sample]]:
        if not data.has_own_splits:
            pool = data.splits["all"]
            parts = seeded_split(len(pool), self.split, self.seed)
            return {name: [pool[i] for i in idx] for name, idx in zip(SPLITS, parts, strict=True)}
        splits = dict(data.splits)
        if "val" not in splits and "train" in splits:
            # Carve validation out of train in the proportion the recipe asks for.
            train = splits["train"]
            val_share = self.split[1] / max(self.split[0] + self.split[1], 1e-9)
            keep, val = seeded_split(len(train), (1 - val_share, val_share), self.seed)
            splits["train"] = [train[i] for i in keep]
            splits["val"] = [train[i] for i in val]
        return splits

    @cached_property
    def classes(self) -> list[str]:
        if self.given_classes:
            return self.given_classes
        if self.source.classes:
            return list(self.source.classes)
        from longmm.data.sources.base import sorted_classes

        train = self._split(self.source).get("train", [])
        return sorted_classes({str(s.label) for s in train if s.label is not None})

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def label_index(self, sample: Sample) -> int:
        return self._class_to_index[str(sample.label)]

    @cached_property
    def _class_to_index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    # -- datasets and loaders --------------------------------------------------------------
    def build_datasets(self, samples: dict[str, list[Sample]]) -> dict[str, Dataset]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if not self.datasets:
            self.datasets = self.build_datasets(self.samples)

    def train_dataloader(self) -> DataLoader:
        ds = self.datasets["train"]
        return self._loader(ds, self.batch_size, EpochSeededSampler(len(ds), self.seed))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["val"], self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["test"], self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def _loader(self, ds: Dataset, batch_size: int, sampler: Sampler | None = None) -> DataLoader:
        # A loader's own generator: creating its iterator then draws nothing from the global
        # RNG, which would shift dropout and augmentation after a resume.
        return DataLoader(
            ds,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed),
            collate_fn=self.collate_fn(),
        )

    def collate_fn(self) -> Callable[[list[Any]], Any] | None:
        """How a loader batches items: None is PyTorch's default (same-shape tensors)."""
        return None

    # -- what a run folder keeps ------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Counts per split and class, and the problems found; for reports and `data inspect`."""
        out: dict[str, Any] = {"source": self.source_name(), "description": self.source.description}
        out["classes"] = self.classes
        out["splits"] = {
            name: {
                "count": len(items),
                "per_class": dict(
                    sorted(
                        Counter(str(s.label) for s in items).items(),
                        key=lambda kv: self._class_to_index[kv[0]],
                    )
                ),
            }
            for name, items in self.samples.items()
        }
        out["skipped"] = [str(b) for b in self.skipped]
        return out

    def preprocessing_state(self) -> dict[str, Any]:
        """What serving and export need to prepare inputs like training did."""
        return {"classes": self.classes}

    def save_artifacts(self, run_dir: Path) -> None:
        atomic_write_json(
            run_dir / "data.json", {**self.summary(), "preprocessing": self.preprocessing_state()}
        )

    def state_dict(self) -> dict[str, Any]:
        return {"classes": self.classes, "preprocessing": json.dumps(self.preprocessing_state())}


class ImageTensorDataset(Dataset):
    """Images already decoded to ``uint8 (N, C, H, W)``: indexing is a cheap view."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"image": self.images[i], "label": self.labels[i], "index": torch.tensor(i)}


IMAGE_FORMATS = ("image-folder", "cifar", "mnist", "manifest")


class ImageData(SourceDataModule):
    """Image classification data: embedded `digits`, image class folders, CIFAR, MNIST IDX,
    or a multimodal manifest's image column.

    Images are resized to ``image_size`` (when set) and converted to ``channels``; the mean
    and std come from the training split (``normalize="standard"``), or are 0.5 so that
    pixels land in [-1, 1] (``"symmetric"``, for generators); ``augment`` runs on training
    batches only.
    """

    def __init__(
        self,
        root: str | None = None,
        format: str = "auto",
        image_size: int | None = None,
        channels: int | None = None,
        augment: ImageAugment | None = None,
        normalize: NormalizeMode = "standard",
        **common: Any,
    ) -> None:
        super().__init__(root=root, format=format, **common)
        self.image_size = image_size
        self.channels = channels
        self.augment = augment
        if normalize not in ("standard", "symmetric"):
            raise DataError(
                "data.normalize", f"must be 'standard' or 'symmetric', got {normalize!r}"
            )
        self.normalize = normalize
        self.normalizer: ImageNormalizer | None = None

    def read_source(self) -> SourceData:
        if self.format in BUILTINS:
            if BUILTINS[self.format].modality != "image":
                raise DataError("data.format", f"{self.format!r} is not an image set")
            return BUILTINS[self.format].read()
        if self.root is None:
            raise DataError("data.root", f"a path is required for format {self.format!r}")
        from longmm.data import sources

        fmt = sources.detect_format(self.root) if self.format == "auto" else self.format
        readers = {
            "image-folder": sources.read_image_folder,
            "cifar": sources.read_cifar,
            "mnist": sources.read_mnist,
            "manifest": sources.read_manifest,
        }
        if fmt not in readers:
            raise DataError(
                "data.format",
                f"{fmt!r} is not an image format (choose from {', '.join(IMAGE_FORMATS)})",
            )
        if not Path(self.root).exists():
            raise DataError("data.root", f"{self.root} does not exist")
        return readers[fmt](self.root, skip_bad=self.skip_bad)

    def build_datasets(self, samples: dict[str, list[Sample]]) -> dict[str, Dataset]:
        channels = self.channels or self._first_channels(samples["train"])
        size = self.image_size or self._first_size(samples["train"])
        self.channels, self.image_size = channels, size
        out = {}
        for name, items in samples.items():
            images = torch.stack(
                [self._image(s, channels, size) for s in items]
            )  # (N, C, H, W) uint8
            labels = torch.tensor([self.label_index(s) for s in items], dtype=torch.long)
            out[name] = ImageTensorDataset(images, labels)
        if self.normalizer is None:  # a restored checkpoint brings its own statistics
            self.normalizer = ImageNormalizer(channels, self.normalize).fit(out["train"].images)
        return out

    @staticmethod
    def _image(sample: Sample, channels: int, size: int) -> Tensor:
        if "image" not in sample.inputs:
            raise DataError(sample.where, "field 'image': missing")
        return to_chw_uint8(
            sample.inputs["image"], channels=channels, size=size, where=sample.where
        )

    @staticmethod
    def _first_channels(train: list[Sample]) -> int:
        arr = train[0].inputs["image"]
        return 1 if arr.ndim == 2 else int(arr.shape[2])

    @staticmethod
    def _first_size(train: list[Sample]) -> int:
        sizes = Counter(s.inputs["image"].shape[:2] for s in train if "image" in s.inputs)
        (h, w), _ = sizes.most_common(1)[0]
        return int(max(h, w))

    def on_after_batch_transfer(
        self, batch: dict[str, Tensor], dataloader_idx: int
    ) -> dict[str, Tensor]:
        if "image" in batch and batch["image"].dtype == torch.uint8:
            assert self.normalizer is not None
            self.normalizer.to(batch["image"].device)
            image = self.normalizer(batch["image"])
            if self.augment is not None:
                # The data module is not an nn.Module, so Lightning does not flip this flag.
                self.augment.train(self.trainer is not None and self.trainer.training)
                image = self.augment(image)
            batch["image"] = image
        return batch

    def preprocessing_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "classes": self.classes,
            "image_size": self.image_size,
            "channels": self.channels,
            "normalize": self.normalize,
        }
        if self.normalizer is not None:
            state["mean"] = self.normalizer.mean.tolist()
            state["std"] = self.normalizer.std.tolist()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        prep = json.loads(state.get("preprocessing", "{}"))
        if "mean" in prep:
            self.normalizer = ImageNormalizer(len(prep["mean"]), prep.get("normalize", "standard"))
            self.normalizer.mean.copy_(torch.tensor(prep["mean"]))
            self.normalizer.std.copy_(torch.tensor(prep["std"]))


def describe_images(samples: list[Sample]) -> dict[str, Any]:
    shapes = Counter(
        tuple(int(v) for v in s.inputs["image"].shape) for s in samples if "image" in s.inputs
    )
    return {"image_shapes": {str(k): v for k, v in shapes.most_common(5)}}

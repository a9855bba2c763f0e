"""The data module: seeded splits, label checks, empty splits, skip_bad, augmentation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from longmm.data import ImageData
from longmm.data.image import ImageAugment
from longmm.data.splits import seeded_split, split_counts
from longmm.errors import DataError


def write_image_folder(root: Path, per_class: int = 6, size: int = 12) -> None:
    rng = np.random.default_rng(0)
    for label in ("cat", "dog", "eel"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")


def test_seeded_split_is_deterministic_and_disjoint() -> None:
    a = seeded_split(1000, (0.7, 0.1, 0.2), seed=5)
    b = seeded_split(1000, (0.7, 0.1, 0.2), seed=5)
    c = seeded_split(1000, (0.7, 0.1, 0.2), seed=6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])
    assert [len(x) for x in a] == [700, 100, 200]
    assert len(set(np.concatenate(a).tolist())) == 1000
    assert split_counts(10, (0.34, 0.33, 0.33)) == [4, 3, 3]
    with pytest.raises(DataError, match="sum to 1"):
        split_counts(10, (0.5, 0.1, 0.1))


def test_mnist_style_split_counts() -> None:
    dm = ImageData(format="digits", split=(0.7, 0.1, 0.2), seed=0)
    counts = {k: len(v) for k, v in dm.samples.items()}
    assert counts == {"train": 1258, "val": 180, "test": 359}
    again = ImageData(format="digits", split=(0.7, 0.1, 0.2), seed=0)
    assert [s.where for s in again.samples["test"]] == [s.where for s in dm.samples["test"]]


def test_normalization_statistics_come_from_train_only() -> None:
    dm = ImageData(format="digits", split=(0.7, 0.1, 0.2))
    dm.setup("fit")
    train = dm.datasets["train"].images.float() / 255
    assert torch.allclose(dm.normalizer.mean, train.mean(dim=(0, 2, 3)))
    test = dm.datasets["test"].images.float() / 255
    assert abs(float(dm.normalizer.mean - test.mean(dim=(0, 2, 3)))) > 1e-4


def test_image_folder_resizes_and_converts(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "imgs")
    dm = ImageData(
        root=str(tmp_path / "imgs"), image_size=8, channels=1, split=(0.5, 0.25, 0.25), batch_size=4
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 1, 8, 8) and batch["image"].dtype == torch.uint8
    assert dm.classes == ["cat", "dog", "eel"]


def test_unknown_label_names_the_item(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "imgs")
    dm = ImageData(root=str(tmp_path / "imgs"), classes=["cat", "dog"], split=(0.5, 0.25, 0.25))
    with pytest.raises(
        DataError, match=r"eel.*field 'label': unknown label 'eel' \(known: cat, dog\)"
    ):
        _ = dm.samples


def test_empty_split_is_refused(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "imgs", per_class=1)
    dm = ImageData(root=str(tmp_path / "imgs"), split=(1.0, 0.0, 0.0))
    with pytest.raises(DataError, match="split 'val' is empty"):
        _ = dm.samples


def test_missing_root_and_wrong_format_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data.root"):
        _ = ImageData(format="mnist").samples
    with pytest.raises(DataError, match=r"does not exist|no such file"):
        _ = ImageData(root=str(tmp_path / "nope"), format="mnist").samples
    with pytest.raises(DataError, match="not an image set"):
        _ = ImageData(format="spoken-digits").samples


def test_corrupt_image_stops_or_is_skipped_and_reported(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    write_image_folder(root)
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match="broken.png"):
        _ = ImageData(root=str(root)).samples
    dm = ImageData(root=str(root), skip_bad=True, split=(0.5, 0.25, 0.25))
    assert sum(len(v) for v in dm.samples.values()) == 18
    assert any("broken.png" in str(item) for item in dm.skipped)
    dm.setup("fit")
    dm.save_artifacts(tmp_path)
    saved = json.loads((tmp_path / "data.json").read_text())
    assert any("broken.png" in line for line in saved["skipped"])


class _FakeTrainer:
    def __init__(self, training: bool) -> None:
        self.training = training


def test_augmentation_runs_in_training_only() -> None:
    dm = ImageData(format="digits", augment=ImageAugment(degrees=20, translate=0.2, noise_std=0.3))
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    reference = dm.normalizer(batch["image"])

    dm.trainer = _FakeTrainer(training=False)
    evaluated = dm.on_after_batch_transfer({"image": batch["image"].clone()}, 0)["image"]
    assert torch.equal(evaluated, reference)

    dm.trainer = _FakeTrainer(training=True)
    trained = dm.on_after_batch_transfer({"image": batch["image"].clone()}, 0)["image"]
    assert not torch.allclose(trained, reference)


def test_epoch_seeded_sampler_depends_on_epoch_only() -> None:
    from longmm.data.datamodule import EpochSeededSampler

    s = EpochSeededSampler(50, seed=1)
    s.set_epoch(3)
    first = list(s)
    torch.manual_seed(123)  # global RNG state must not matter
    s2 = EpochSeededSampler(50, seed=1)
    s2.set_epoch(3)
    assert list(s2) == first
    s2.set_epoch(4)
    assert list(s2) != first

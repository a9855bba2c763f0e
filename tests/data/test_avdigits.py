"""AVDigits: pairs of the same digit, disjoint splits, deterministic corruption, the batch
contract, missing modalities at test time, manifests of your own pairs, the real set."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from longmm.data import AVDigits
from longmm.data.avdigits import Corruption, pair_by_label
from longmm.data.schema import Sample, Waveform
from longmm.errors import DataError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
BATCH_KEYS = {"image", "audio", "audio_mask", "label", "speaker", "index"}


# ---- tiny stand-ins for MNIST and FSDD, written by the tests ----------------------------------


def digit_image(label: int, rng: np.random.Generator, size: int = 8) -> np.ndarray:
    """A label-specific stroke pattern with a little jitter, uint8 (size, size)."""
    img = np.zeros((size, size), dtype=np.uint8)
    img[:, label % size] = 200
    img[label % size, :] = 120
    return np.clip(img + rng.integers(0, 40, img.shape), 0, 255).astype(np.uint8)


def tone(label: int, seconds: float, rate: int = 8000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.4 * np.sin(2 * np.pi * (300 + 200 * label) * t)).astype(np.float32)


def write_tiny_real(root: Path, n_images: int = 60, digits: int = 3, takes: int = 8) -> Path:
    """``root/mnist`` (t10k IDX, gzipped) and ``root/fsdd/recordings`` (FSDD names)."""
    rng = np.random.default_rng(0)
    labels = np.arange(n_images) % digits
    images = np.stack([digit_image(int(y), rng) for y in labels])
    (root / "mnist").mkdir(parents=True)
    with gzip.open(root / "mnist" / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 2051, n_images, 8, 8) + images.tobytes())
    with gzip.open(root / "mnist" / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 2049, n_images) + labels.astype(np.uint8).tobytes())
    rec = root / "fsdd" / "recordings"
    rec.mkdir(parents=True)
    for d in range(digits):
        for speaker in ("ann", "bob"):
            for take in range(takes):
                seconds = 0.1 + 0.02 * ((take + d) % 4)
                soundfile.write(rec / f"{d}_{speaker}_{take}.wav", tone(d, seconds), 8000)
    return root


def tiny(root: Path, **kwargs) -> AVDigits:
    options = {"split": (0.6, 0.2, 0.2), "test_takes": [0, 1], "val_takes": [2, 3]}
    return AVDigits(root=str(root), batch_size=8, **(options | kwargs))


@pytest.fixture(scope="module")
def real_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_real(tmp_path_factory.mktemp("av") / "data")


@pytest.fixture(scope="module")
def embedded() -> AVDigits:
    dm = AVDigits(image_noise=0.3, image_occlusion=0.2, audio_snr_db=0, batch_size=16)
    dm.setup("fit")
    return dm


# ---- embedded -----------------------------------------------------------------------------


def test_embedded_pairs_share_the_digit_and_splits_are_disjoint(embedded: AVDigits) -> None:
    from sklearn.datasets import load_digits

    digit_of = load_digits().target
    images, clips = {}, {}
    for name, pairs in embedded.samples.items():
        for pair in pairs:
            i = int(pair.meta["image"].removeprefix("digits[").rstrip("]"))
            j = int(pair.meta["audio"].removeprefix("spoken-digits[").rstrip("]"))
            # Clip j of spoken-digits says digit j % 10 (the set interleaves the digits).
            assert str(digit_of[i]) == str(j % 10) == pair.label
        images[name] = [p.meta["image"] for p in pairs]
        clips[name] = {p.meta["audio"] for p in pairs}
        assert len(set(images[name])) == len(images[name])  # each image once per epoch
    assert {k: len(v) for k, v in images.items()} == {"train": 1258, "val": 180, "test": 359}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not set(images[a]) & set(images[b])
        assert not clips[a] & clips[b]
    assert embedded.speakers == [f"synth{k}" for k in range(6)]


def test_embedded_batches_follow_the_contract(embedded: AVDigits) -> None:
    batch = embedded.transform(next(iter(embedded.train_dataloader())), training=True)
    assert set(batch) == BATCH_KEYS
    b = len(batch["label"])
    assert batch["image"].shape == (b, 1, 8, 8) and batch["image"].dtype == torch.float32
    assert batch["audio"].shape[:2] == (b, 40)
    assert batch["audio_mask"].shape == (b, batch["audio"].shape[2])
    assert batch["audio_mask"].dtype == torch.bool
    assert int(batch["speaker"].max()) < embedded.num_speakers
    # Padded frames hold 0 and only the mask says what is real.
    assert (batch["audio"].masked_select(~batch["audio_mask"][:, None, :]) == 0).all()


# ---- pairing and corruption ---------------------------------------------------------------


def test_pairing_uses_every_image_once_and_cycles_clips() -> None:
    wave = [Waveform(np.zeros(10, np.float32), 8000) for _ in range(4)]
    images = [
        Sample({"image": np.zeros((2, 2, 1), np.uint8)}, {"label": str(i % 2)}, f"i{i}")
        for i in range(10)
    ]
    clips = [
        Sample({"audio": w}, {"label": str(k % 2), "speaker": "s"}, f"c{k}")
        for k, w in enumerate(wave)
    ]
    pairs = pair_by_label(images, clips, "train", seed=0)
    assert [p.meta["image"] for p in pairs] == [f"i{i}" for i in range(10)]
    for p in pairs:
        assert int(p.meta["audio"][1:]) % 2 == int(p.label)
    # Two clips per digit, five images per digit: each clip used 2 or 3 times.
    uses = [sum(p.meta["audio"] == f"c{k}" for p in pairs) for k in range(4)]
    assert sorted(uses) == [2, 2, 3, 3]
    assert [p.meta["audio"] for p in pair_by_label(images, clips, "train", 0)] == [
        p.meta["audio"] for p in pairs
    ]
    with pytest.raises(DataError, match="no clip of label '1'"):
        pair_by_label(images, clips[:1], "val", seed=0)


def test_corruption_is_deterministic_per_split_and_index() -> None:
    c = Corruption(seed=0, image_noise=0.3, image_occlusion=0.25, audio_snr_db=0.0)
    img = torch.full((1, 8, 8), 200, dtype=torch.uint8)
    a = c.image(img, "train", 3)
    assert torch.equal(a, c.image(img, "train", 3))
    assert not torch.equal(a, c.image(img, "train", 4))
    assert not torch.equal(a, c.image(img, "test", 3))
    assert not torch.equal(a, img)
    # The block covers a quarter of the area (4x4 of 8x8) before the noise.
    no_noise = Corruption(image_occlusion=0.25).image(img, "test", 0)
    assert int((no_noise == 0).sum()) == 16
    wave = torch.from_numpy(tone(1, 0.2))
    noisy = c.audio(wave, "val", 5)
    assert torch.equal(noisy, c.audio(wave, "val", 5))
    noise = noisy - wave
    snr = 10 * torch.log10(wave.square().mean() / noise.square().mean())
    assert abs(float(snr)) < 0.01  # 0 dB asked
    pink = Corruption(audio_snr_db=10.0, audio_noise="pink").audio(wave, "train", 0) - wave
    assert 10 * torch.log10(wave.square().mean() / pink.square().mean()) == pytest.approx(
        10.0, abs=0.01
    )
    with pytest.raises(DataError, match="image_occlusion"):
        Corruption(image_occlusion=1.5)


def test_same_settings_give_the_same_corrupted_data(real_root: Path) -> None:
    knobs = {"image_noise": 0.4, "image_occlusion": 0.2, "audio_snr_db": 3.0}
    a, b = tiny(real_root, **knobs), tiny(real_root, **knobs)
    a.setup("fit")
    b.setup("fit")
    for split in ("train", "val", "test"):
        assert torch.equal(a.datasets[split].images, b.datasets[split].images)
        assert torch.equal(a.datasets[split].waveform(1), b.datasets[split].waveform(1))
    clean = tiny(real_root)
    clean.setup("fit")
    # Every split is corrupted, test included.
    for split in ("train", "test"):
        assert not torch.equal(a.datasets[split].images, clean.datasets[split].images)
        assert not torch.equal(a.datasets[split].waveform(0), clean.datasets[split].waveform(0))


# ---- the real layout (tiny stand-in) ------------------------------------------------------


def test_real_layout_splits_clips_by_take_and_pairs_within_a_split(real_root: Path) -> None:
    dm = tiny(real_root)
    dm.setup("fit")
    takes = {"test": {0, 1}, "val": {2, 3}, "train": {4, 5, 6, 7}}
    seen_images = set()
    for split, pairs in dm.samples.items():
        for pair in pairs:
            stem = Path(pair.meta["audio"]).stem
            digit, _, take = stem.split("_")
            assert digit == pair.label and int(take) in takes[split]
            assert pair.meta["image"] not in seen_images
            seen_images.add(pair.meta["image"])
    assert {k: len(v) for k, v in dm.samples.items()} == {"train": 36, "val": 12, "test": 12}
    assert dm.speakers == ["ann", "bob"] and dm.classes == ["0", "1", "2"]
    summary = dm.summary()
    assert summary["pairs"]["train"] == {"images": 36, "clips": 24}


def test_drop_at_test_removes_the_keys_outside_training(real_root: Path) -> None:
    dm = tiny(real_root, drop_at_test=["audio"])
    dm.setup("fit")
    raw = next(iter(dm.test_dataloader()))
    dropped = dm.transform({k: v.clone() for k, v in raw.items()}, training=False)
    assert set(dropped) == BATCH_KEYS - {"audio", "audio_mask"}
    kept = dm.transform({k: v.clone() for k, v in raw.items()}, training=True)
    assert set(kept) == BATCH_KEYS
    # Without a trainer the module is not training: Lightning's hook drops too.
    assert "audio" not in dm.on_after_batch_transfer(dict(raw), 0)
    image_gone = tiny(real_root, drop_at_test=["image"])
    image_gone.setup("fit")
    batch = image_gone.transform(next(iter(image_gone.val_dataloader())), training=False)
    assert set(batch) == BATCH_KEYS - {"image"}
    with pytest.raises(DataError, match="drop_at_test"):
        AVDigits(drop_at_test=["text"])
    with pytest.raises(DataError, match="every modality"):
        AVDigits(drop_at_test=["image", "audio"])


def test_checkpoint_state_restores_both_normalizers(real_root: Path) -> None:
    dm = tiny(real_root, image_noise=0.2)
    dm.setup("fit")
    restored = tiny(real_root, image_noise=0.2)
    restored.load_state_dict(dm.state_dict())
    assert torch.equal(restored.image_normalizer.mean, dm.image_normalizer.mean)
    assert torch.equal(restored.audio_normalizer.std, dm.audio_normalizer.std)
    prep = json.loads(dm.state_dict()["preprocessing"])
    assert prep["corruption"]["image_noise"] == 0.2 and prep["speakers"] == ["ann", "bob"]


def test_real_layout_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="mnist_root"):
        AVDigits(root=str(tmp_path)).setup("fit")
    with pytest.raises(DataError, match="a folder is required|root"):
        AVDigits(format="mnist-fsdd").setup("fit")


# ---- manifests ----------------------------------------------------------------------------


def write_manifest(root: Path, lines: list[dict] | None = None) -> Path:
    rng = np.random.default_rng(1)
    (root / "img").mkdir(parents=True)
    (root / "wav").mkdir()
    rows = []
    for i in range(18):
        label = i % 3
        Image.fromarray(digit_image(label, rng)).save(root / "img" / f"{i}.png")
        soundfile.write(root / "wav" / f"{i}.wav", tone(label, 0.1), 8000)
        split = "train" if i < 12 else "val" if i < 15 else "test"
        row = {"image": f"img/{i}.png", "audio": f"wav/{i}.wav", "label": label, "split": split}
        if i % 2:
            row["speaker"] = "kim"
        rows.append(row)
    path = root / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in (lines or rows)))
    return path


def test_manifest_pairs_read_and_batch(tmp_path: Path) -> None:
    path = write_manifest(tmp_path / "m")
    dm = AVDigits(root=str(path), batch_size=4)
    assert dm.resolved_format == "manifest"
    dm.setup("fit")
    assert {k: len(v) for k, v in dm.samples.items()} == {"train": 12, "val": 3, "test": 3}
    assert dm.speakers == ["kim", "unknown"]
    batch = dm.transform(next(iter(dm.train_dataloader())), training=True)
    assert set(batch) == BATCH_KEYS and batch["image"].shape == (4, 1, 8, 8)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"audio": "wav/nothere.wav"}, r"pairs\.jsonl:3: field 'audio': .*no such file"),
        ({"label": True}, r"pairs\.jsonl:3: field 'label'"),
        ({"split": "dev"}, r"pairs\.jsonl:3: field 'split'"),
        ({"audio": None}, r"pairs\.jsonl:3: field 'audio': missing"),
    ],
)
def test_bad_manifest_line_is_named(tmp_path: Path, change: dict, message: str) -> None:
    path = write_manifest(tmp_path / "m")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[2] = {k: v for k, v in {**rows[2], **change}.items() if v is not None}
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=message):
        AVDigits(root=str(path)).setup("fit")
    # With skip_bad the line is skipped and listed instead.
    dm = AVDigits(root=str(path), skip_bad=True)
    dm.setup("fit")
    assert len(dm.skipped) == 1 and "pairs.jsonl:3" in str(dm.skipped[0])


# ---- the real set ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared data folder {SHARED} is missing")
def test_real_mnist_fsdd_splits() -> None:
    dm = AVDigits(root=str(SHARED), image_noise=0.5, audio_snr_db=0)
    counts = {k: len(v) for k, v in dm.samples.items()}
    assert counts == {"train": 7000, "val": 1000, "test": 2000}
    clips = {k: {p.meta["audio"] for p in v} for k, v in dm.samples.items()}
    assert {k: len(v) for k, v in clips.items()} == {"train": 2400, "val": 300, "test": 300}
    for split, pairs in dm.samples.items():
        for pair in pairs:
            assert Path(pair.meta["audio"]).name.split("_")[0] == pair.label
        takes = {int(Path(a).stem.split("_")[2]) for a in clips[split]}
        assert takes == {"test": set(range(5)), "val": set(range(5, 10))}.get(
            split, set(range(10, 50))
        )
    images = {k: {p.meta["image"] for p in v} for k, v in dm.samples.items()}
    assert not images["train"] & images["test"] and not images["val"] & images["test"]
    assert len(dm.speakers) == 6


# ---- a labelled share of the training pairs ---------------------------------------------------


def test_label_fraction_keeps_a_stratified_share_of_train_only(real_root: Path) -> None:
    full = tiny(real_root)
    full.setup("fit")
    part = tiny(real_root, label_fraction=0.25)
    part.setup("fit")
    train, kept = full.samples["train"], part.samples["train"]
    assert len(kept) == sum(
        max(1, round(0.25 * sum(s.label == y for s in train))) for y in {s.label for s in train}
    )
    assert {s.where for s in kept} <= {s.where for s in train}
    assert {s.label for s in kept} == {s.label for s in train}
    for split in ("val", "test"):
        assert [s.where for s in part.samples[split]] == [s.where for s in full.samples[split]]
    again = tiny(real_root, label_fraction=0.25)
    again.setup("fit")
    assert [s.where for s in again.samples["train"]] == [s.where for s in kept]
    with pytest.raises(DataError, match="label_fraction"):
        tiny(real_root, label_fraction=0.0)

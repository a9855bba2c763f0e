"""Readers of standard formats, on small files the tests write (and real data when present)."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

from longmm.data.schema import Waveform
from longmm.data.sources import (
    FORMATS,
    decode_audio,
    decode_image,
    detect_format,
    read_audio_folder,
    read_cifar,
    read_image_folder,
    read_manifest,
    read_mnist,
    read_parallel,
    read_parallel_dir,
    read_table,
    read_table_splits,
)
from longmm.errors import DataError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
RNG = np.random.default_rng(0)


def write_image(path: Path, mode: str = "RGB", size: tuple[int, int] = (6, 4)) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    pixels = RNG.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels).save(path)
    return pixels


def write_wav(path: Path, frames: int = 800, channels: int = 1, rate: int = 8000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, RNG.uniform(-0.5, 0.5, (frames, channels)), rate, subtype="PCM_16")


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(f"{line}\n" for line in lines).encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def bad_item(excinfo: pytest.ExceptionInfo[DataError], *parts: str) -> None:
    for part in parts:
        assert part in str(excinfo.value), (part, str(excinfo.value))


# ---- image folders -----------------------------------------------------------------------


def test_image_folder_reads_classes_modes_and_ignores_other_files(tmp_path: Path) -> None:
    rgb = write_image(tmp_path / "cat" / "a.png")
    write_image(tmp_path / "cat" / "b.jpg")
    write_image(tmp_path / "dog" / "c.bmp", "L")
    write_image(tmp_path / "dog" / "d.png", "RGBA")
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    data = read_image_folder(tmp_path)
    assert list(data.splits) == ["all"] and data.classes == ["cat", "dog"]
    samples = data.splits["all"]
    assert [s.label for s in samples] == ["cat", "cat", "dog", "dog"]
    assert np.array_equal(samples[0].inputs["image"], rgb)
    shapes = [s.inputs["image"].shape for s in samples]
    assert shapes == [(4, 6, 3), (4, 6, 3), (4, 6, 1), (4, 6, 3)]
    assert all(s.inputs["image"].dtype == np.uint8 for s in samples)
    assert samples[0].where.endswith("a.png")


def test_decode_image_scales_16_bit_grey(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 65535], [256, 32768]], dtype=np.uint16)).save(tmp_path / "w.png")
    assert decode_image(tmp_path / "w.png")[:, :, 0].tolist() == [[0, 255], [1, 128]]


def test_image_folder_with_split_folders(tmp_path: Path) -> None:
    for split in ("train", "test"):
        write_image(tmp_path / split / "cat" / "a.png")
        write_image(tmp_path / split / "dog" / "a.png")
    data = read_image_folder(tmp_path)
    assert sorted(data.splits) == ["test", "train"] and data.has_own_splits
    assert len(data.splits["train"]) == 2


def test_image_folder_corrupt_image(tmp_path: Path) -> None:
    write_image(tmp_path / "cat" / "good.png")
    (tmp_path / "cat" / "junk.png").write_bytes(b"not a png at all")
    whole = tmp_path / "cat" / "whole.png"
    write_image(whole, size=(64, 64))
    (tmp_path / "cat" / "truncated.png").write_bytes(whole.read_bytes()[:200])
    with pytest.raises(DataError) as excinfo:
        read_image_folder(tmp_path)
    bad_item(excinfo, "junk.png", "not a readable image")
    data = read_image_folder(tmp_path, skip_bad=True)
    assert len(data.splits["all"]) == 2
    assert [Path(b.where).name for b in data.skipped] == ["junk.png", "truncated.png"]


def test_image_folder_empty(tmp_path: Path) -> None:
    (tmp_path / "cat").mkdir()
    with pytest.raises(DataError, match=r"no .* files in class folders"):
        read_image_folder(tmp_path)


# ---- CIFAR -------------------------------------------------------------------------------


def cifar_batch(path: Path, count: int, labels_key: bytes = b"labels") -> np.ndarray:
    data = RNG.integers(0, 256, (count, 3072), dtype=np.uint8)
    labels = [i % 3 for i in range(count)]
    with path.open("wb") as fh:
        pickle.dump({b"data": data, labels_key: labels, b"batch_label": b"x"}, fh, protocol=2)
    return data


def test_cifar10_batches(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    first = cifar_batch(folder / "data_batch_1", 4)
    cifar_batch(folder / "data_batch_2", 3)
    cifar_batch(folder / "test_batch", 2)
    names = [b"bird", b"airplane", b"cat"]
    with (folder / "batches.meta").open("wb") as fh:
        pickle.dump({b"label_names": names, b"num_vis": 3072}, fh, protocol=2)
    data = read_cifar(tmp_path)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 7, "test": 2}
    assert data.classes == ["airplane", "bird", "cat"]
    image = data.splits["train"][0].inputs["image"]
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    # rows hold the red plane, then green, then blue
    assert image[0, 1].tolist() == [first[0, 1], first[0, 1025], first[0, 2049]]
    assert [s.label for s in data.splits["train"][:4]] == ["bird", "airplane", "cat", "bird"]


def test_cifar100_with_str_keys(tmp_path: Path) -> None:
    for name, count in (("train", 3), ("test", 1)):
        data = RNG.integers(0, 256, (count, 3072), dtype=np.uint8)
        with (tmp_path / name).open("wb") as fh:
            pickle.dump(
                {"data": data, "fine_labels": [1] * count, "coarse_labels": [0] * count}, fh
            )
    with (tmp_path / "meta").open("wb") as fh:
        pickle.dump({"fine_label_names": ["apple", "bear"], "coarse_label_names": ["x"]}, fh)
    data = read_cifar(tmp_path)
    assert [s.label for s in data.splits["train"]] == ["bear"] * 3 and len(data.splits["test"]) == 1


def py2_pickle(obj: dict[bytes, np.ndarray | list]) -> bytes:
    """A dict pickled as Python 2's cPickle wrote the original CIFAR batches (str, not bytes)."""

    def text(b: bytes) -> bytes:  # a Python 2 str: SHORT_BINSTRING or BINSTRING
        return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b

    def num(n: int) -> bytes:
        return b"J" + struct.pack("<i", n)

    def array(a: np.ndarray) -> bytes:  # ndarray.__reduce__ of numpy 1.x, uint8 only
        dtype = b"cnumpy\ndtype\n" + text(b"u1") + num(0) + num(1) + b"\x87R"
        dtype += b"(" + num(3) + text(b"|") + b"NNN" + num(-1) + num(-1) + num(0) + b"tb"
        shape = b"(" + b"".join(num(d) for d in a.shape) + b"t"
        new = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + num(0) + b"\x85"
        state = b"(" + num(1) + shape + dtype + b"\x89" + text(a.tobytes()) + b"tb"
        return new + text(b"b") + b"\x87R" + state

    def value(v: np.ndarray | list) -> bytes:
        if isinstance(v, np.ndarray):
            return array(v)
        return b"(" + b"".join(num(x) if isinstance(x, int) else text(x) for x in v) + b"l"

    return b"\x80\x02}(" + b"".join(text(k) + value(v) for k, v in obj.items()) + b"u."


def test_cifar_reads_python2_pickles(tmp_path: Path) -> None:
    data = RNG.integers(0, 256, (2, 3072), dtype=np.uint8)
    (tmp_path / "data_batch_1").write_bytes(py2_pickle({b"data": data, b"labels": [1, 0]}))
    (tmp_path / "batches.meta").write_bytes(py2_pickle({b"label_names": [b"cat", b"dog"]}))
    samples = read_cifar(tmp_path).splits["train"]
    assert [s.label for s in samples] == ["dog", "cat"]
    assert samples[1].inputs["image"][0, 0].tolist() == data[1, [0, 1024, 2048]].tolist()


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_cifar_refuses_pickles_that_call_functions(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    cifar_batch(tmp_path / "data_batch_1", 2)
    with (tmp_path / "batches.meta").open("wb") as fh:
        pickle.dump({b"label_names": [b"a", b"b", b"c"], b"x": _Exploit(marker)}, fh, protocol=2)
    with pytest.raises(DataError) as excinfo:
        read_cifar(tmp_path)
    bad_item(excinfo, "batches.meta", "refusing to unpickle", "system")
    assert not marker.exists()


def test_cifar_bad_label_is_a_bad_item(tmp_path: Path) -> None:
    data = RNG.integers(0, 256, (2, 3072), dtype=np.uint8)
    with (tmp_path / "data_batch_1").open("wb") as fh:
        pickle.dump({b"data": data, b"labels": [0, 7]}, fh, protocol=2)
    with (tmp_path / "batches.meta").open("wb") as fh:
        pickle.dump({b"label_names": [b"a", b"b"]}, fh, protocol=2)
    with pytest.raises(DataError) as excinfo:
        read_cifar(tmp_path)
    bad_item(excinfo, "data_batch_1: image 1", "label 7")
    assert len(read_cifar(tmp_path, skip_bad=True).skipped) == 1


# ---- MNIST -------------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray, magic: int, cut: int = 0) -> None:
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    data = (header + array.astype(np.uint8).tobytes())[: -cut or None]
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def write_mnist(root: Path, prefix: str, count: int, gz: bool) -> np.ndarray:
    images = RNG.integers(0, 256, (count, 28, 28), dtype=np.uint8)
    suffix = ".gz" if gz else ""
    write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", images, 2051)
    write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(count) % 10, 2049)
    return images


def test_mnist_train_raw_and_test_gz(tmp_path: Path) -> None:
    train = write_mnist(tmp_path, "train", 5, gz=False)
    write_mnist(tmp_path, "t10k", 3, gz=True)
    data = read_mnist(tmp_path)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 5, "test": 3}
    first = data.splits["train"][1]
    assert first.inputs["image"].shape == (28, 28, 1) and first.label == "1"
    assert np.array_equal(first.inputs["image"][:, :, 0], train[1])
    assert "t10k-images-idx3-ubyte.gz" in data.description


def test_mnist_one_image_set_goes_under_all(tmp_path: Path) -> None:
    write_mnist(tmp_path, "t10k", 4, gz=True)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(9), 2049)
    data = read_mnist(tmp_path)
    assert list(data.splits) == ["all"] and len(data.splits["all"]) == 4
    assert "ignored train-labels-idx1-ubyte.gz" in data.description


def test_mnist_truncated_file(tmp_path: Path) -> None:
    write_mnist(tmp_path, "t10k", 3, gz=True)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((3, 28, 28)), 2051, cut=10)
    with pytest.raises(DataError) as excinfo:
        read_mnist(tmp_path)
    bad_item(excinfo, "t10k-images-idx3-ubyte.gz", "truncated")


def test_mnist_count_mismatch_and_wrong_magic(tmp_path: Path) -> None:
    write_mnist(tmp_path, "t10k", 3, gz=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(2), 2049)
    with pytest.raises(DataError) as excinfo:
        read_mnist(tmp_path)
    bad_item(excinfo, "t10k-images-idx3-ubyte", "3 images", "t10k-labels-idx1-ubyte", "2 labels")
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(3), 2051)
    with pytest.raises(DataError, match="magic number 2051, expected 2049"):
        read_mnist(tmp_path)


@pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="no shared MNIST copy")
def test_real_mnist_test_set() -> None:
    data = read_mnist(SHARED / "mnist")
    samples = data.splits["all"]
    assert len(samples) == 10_000
    assert [s.label for s in samples[:5]] == ["7", "2", "1", "0", "4"]


# ---- audio -------------------------------------------------------------------------------


def test_audio_class_folders_mix_stereo_to_mono(tmp_path: Path) -> None:
    write_wav(tmp_path / "yes" / "a.wav", channels=2)
    write_wav(tmp_path / "no" / "b.flac", frames=400, rate=16000)
    data = read_audio_folder(tmp_path)
    assert data.classes == ["no", "yes"]
    wave = data.splits["all"][1].inputs["audio"]
    assert isinstance(wave, Waveform) and wave.samples.shape == (800,)
    assert wave.samples.dtype == np.float32 and wave.sample_rate == 8000
    stereo, _ = soundfile.read(tmp_path / "yes" / "a.wav", dtype="float32")
    assert np.allclose(wave.samples, stereo.mean(axis=1))


def test_audio_fsdd_names_and_test_takes(tmp_path: Path) -> None:
    for name in ("3_theo_0.wav", "3_theo_7.wav", "10_ann_2.wav"):
        write_wav(tmp_path / name)
    data = read_audio_folder(tmp_path, test_takes=[0, 1, 2])
    assert [s.where.rsplit("/", 1)[1] for s in data.splits["test"]] == [
        "3_theo_0.wav",
        "10_ann_2.wav",
    ]
    sample = data.splits["train"][0]
    assert sample.targets == {"label": "3", "speaker": "theo"} and sample.meta == {"take": 7}
    assert data.classes == ["3", "10"]
    assert list(read_audio_folder(tmp_path).splits) == ["all"]


def test_audio_bad_files(tmp_path: Path) -> None:
    write_wav(tmp_path / "1_ann_0.wav")
    (tmp_path / "1_ann_1.wav").write_text("not audio")
    write_wav(tmp_path / "1_ann_2.wav", frames=0)
    write_wav(tmp_path / "hello.wav")
    with pytest.raises(DataError) as excinfo:
        read_audio_folder(tmp_path)
    bad_item(excinfo, "hello.wav", "{label}_{speaker}_{take}.wav")
    (tmp_path / "hello.wav").unlink()
    with pytest.raises(DataError) as excinfo:
        read_audio_folder(tmp_path)
    bad_item(excinfo, "1_ann_1.wav", "not readable audio")
    data = read_audio_folder(tmp_path, skip_bad=True)
    assert len(data.splits["all"]) == 1
    assert [(Path(b.where).name, b.reason[:8]) for b in data.skipped] == [
        ("1_ann_1.wav", "not read"),
        ("1_ann_2.wav", "no audio"),
    ]


@pytest.mark.skipif(not (SHARED / "fsdd" / "recordings").is_dir(), reason="no shared FSDD copy")
def test_real_fsdd() -> None:
    data = read_audio_folder(SHARED / "fsdd" / "recordings", test_takes=[0, 1, 2, 3, 4])
    assert len(data.splits["train"]) == 2700 and len(data.splits["test"]) == 300
    samples = data.splits["train"] + data.splits["test"]
    assert len({s.targets["speaker"] for s in samples}) == 6
    assert {s.inputs["audio"].sample_rate for s in samples} == {8000}
    assert data.classes == [str(d) for d in range(10)]


# ---- tables ------------------------------------------------------------------------------


def test_csv_with_header_and_quotes(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.csv", ["id,text,label", '1,"good, really",pos', "2,bad,neg"])
    data = read_table(path)
    assert [(s.inputs["text"], s.label) for s in data.splits["all"]] == [
        ("good, really", "pos"),
        ("bad", "neg"),
    ]
    assert data.classes == ["neg", "pos"] and data.splits["all"][1].where.endswith("t.csv:3")


def test_tsv_by_index_with_and_without_header(tmp_path: Path) -> None:
    rows = ['he said "hi" \t1', "it 's fine\t0"]
    bare = read_table(write_lines(tmp_path / "a.tsv", rows), text_column=0, label_column=1)
    assert [s.inputs["text"] for s in bare.splits["all"]] == ['he said "hi" ', "it 's fine"]
    headed = write_lines(tmp_path / "b.tsv.gz", ["sentence\tlabel", *rows])
    auto = read_table(headed, text_column="sentence")
    by_index = read_table(headed, text_column=0, label_column=1, header=True)
    for data in (auto, by_index):
        assert [s.label for s in data.splits["all"]] == ["1", "0"]


def test_jsonl_table_and_format_override(tmp_path: Path) -> None:
    lines = [json.dumps({"text": "a", "label": 3}), "", json.dumps({"text": "b", "label": "x"})]
    data = read_table(write_lines(tmp_path / "t.jsonl", lines))
    assert [s.label for s in data.splits["all"]] == ["3", "x"]
    plain = write_lines(tmp_path / "t.txt", ["a,1"])
    assert read_table(plain, text_column=0, label_column=None, format="csv").classes is None


def test_table_missing_column_and_empty_text(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "train.tsv", ["text\tlabel", "ok\t1", "short", "\t0"])
    with pytest.raises(DataError) as excinfo:
        read_table(path)
    bad_item(excinfo, "train.tsv:3: field 'label'", "missing (the row has 1 fields)")
    data = read_table(path, skip_bad=True)
    assert len(data.splits["all"]) == 1
    assert [b.where.rsplit("/", 1)[1] for b in data.skipped] == [
        "train.tsv:3: field 'label'",
        "train.tsv:4: field 'text'",
    ]
    with pytest.raises(DataError, match=r"train.tsv:1: no column 'body' in the header"):
        read_table(path, text_column="body")


def test_jsonl_malformed_lines(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", ['{"text": "a", "label": 1}', "{oops", "[1, 2]"])
    with pytest.raises(DataError) as excinfo:
        read_table(path)
    bad_item(excinfo, "t.jsonl:2", "invalid JSON")
    data = read_table(path, skip_bad=True)
    assert [b.reason.split(":")[0] for b in data.skipped] == [
        "invalid JSON",
        "expected a JSON object, got list",
    ]


def test_table_splits_unknown_label(tmp_path: Path) -> None:
    write_lines(tmp_path / "train.tsv", ["text\tlabel", "a\t0", "b\t1"])
    write_lines(tmp_path / "test.tsv", ["text\tlabel", "c\t1", "d\t2"])
    with pytest.raises(DataError) as excinfo:
        read_table_splits(tmp_path)
    bad_item(excinfo, "test.tsv:3: field 'label'", "unknown label '2'", "'0', '1'")
    data = read_table_splits(tmp_path, skip_bad=True)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 2, "test": 1}
    assert len(data.skipped) == 1 and data.classes == ["0", "1"]


@pytest.mark.skipif(not (SHARED / "sst2").is_dir(), reason="no shared SST-2 copy")
def test_real_sst2() -> None:
    data = read_table_splits(SHARED / "sst2", text_column="sentence")
    counts = {k: len(v) for k, v in data.splits.items()}
    assert counts == {"train": 60_614, "val": 6_735, "test": 872} and data.classes == ["0", "1"]


# ---- parallel text -----------------------------------------------------------------------


def test_parallel_plain_and_gz(tmp_path: Path) -> None:
    src = write_lines(tmp_path / "a.en", ["A dog.", "Two cats."])
    tgt = write_lines(tmp_path / "a.de.gz", ["Ein Hund.", "Zwei Katzen."])
    samples = read_parallel(src, tgt).splits["all"]
    assert [(s.inputs["text"], s.targets["target_text"]) for s in samples][1] == (
        "Two cats.",
        "Zwei Katzen.",
    )


def test_parallel_count_mismatch_and_empty_line(tmp_path: Path) -> None:
    src = write_lines(tmp_path / "a.en", ["A", "B", "C"])
    tgt = write_lines(tmp_path / "a.de", ["A", "B"])
    with pytest.raises(DataError) as excinfo:
        read_parallel(src, tgt)
    bad_item(excinfo, "a.en", "3 lines", "a.de", "has 2")
    tgt = write_lines(tmp_path / "a.de", ["A", " ", "C"])
    with pytest.raises(DataError) as excinfo:
        read_parallel(src, tgt)
    bad_item(excinfo, "a.de:2", "empty line")
    data = read_parallel(src, tgt, skip_bad=True)
    assert len(data.splits["all"]) == 2 and data.skipped[0].where.endswith("a.de:2")


def test_parallel_dir_finds_raw_folder(tmp_path: Path) -> None:
    for prefix in ("train", "val", "test_2016_flickr"):
        for lang in ("en", "fr"):
            write_lines(tmp_path / "raw" / f"{prefix}.{lang}.gz", [f"{prefix} {lang}"])
    data = read_parallel_dir(tmp_path, "en", "fr")
    assert data.splits["test"][0].targets["target_text"] == "test_2016_flickr fr"
    with pytest.raises(DataError, match=r"no train\.de or train\.de\.gz"):
        read_parallel_dir(tmp_path, "en", "de")


@pytest.mark.skipif(not (SHARED / "multi30k").is_dir(), reason="no shared Multi30k copy")
def test_real_multi30k() -> None:
    data = read_parallel_dir(SHARED / "multi30k", "en", "de")
    assert {k: len(v) for k, v in data.splits.items()} == {
        "train": 29_000,
        "val": 1_014,
        "test": 1_000,
    }


# ---- manifests ---------------------------------------------------------------------------


def write_manifest(path: Path, rows: list[dict | str]) -> Path:
    return write_lines(path, [r if isinstance(r, str) else json.dumps(r) for r in rows])


def test_manifest_relative_paths_splits_and_extra_targets(tmp_path: Path) -> None:
    pixels = write_image(tmp_path / "img" / "1.png")
    write_wav(tmp_path / "wav" / "1.wav")
    rows = [
        {"text": "a cat", "image": "img/1.png", "label": 2, "split": "train", "score": 0.5},
        {"audio": "wav/1.wav", "image": None, "label": "1", "split": "test"},
    ]
    data = read_manifest(write_manifest(tmp_path / "manifest.jsonl", rows))
    assert sorted(data.splits) == ["test", "train"] and data.classes == ["1", "2"]
    first = data.splits["train"][0]
    assert np.array_equal(first.inputs["image"], pixels) and first.inputs["text"] == "a cat"
    assert first.targets == {"label": "2", "score": 0.5}
    assert set(data.splits["test"][0].inputs) == {"audio"}
    assert decode_audio(tmp_path / "wav" / "1.wav").sample_rate == 8000


def test_manifest_bad_lines(tmp_path: Path) -> None:
    write_image(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"garbage")
    rows = [
        {"image": "ok.png", "label": "a"},
        {"image": "missing.png"},
        {"image": "broken.png"},
        "{not json",
        {"label": "a"},
        {"text": "hi", "tags": ["x"]},
    ]
    path = write_manifest(tmp_path / "manifest.jsonl", rows)
    with pytest.raises(DataError) as excinfo:
        read_manifest(path)
    bad_item(excinfo, "manifest.jsonl:2: field 'image'", "no such file", "missing.png")
    data = read_manifest(path, skip_bad=True)
    assert len(data.splits["all"]) == 1
    where = [b.where.rsplit("/", 1)[1] for b in data.skipped]
    assert where == [
        "manifest.jsonl:2: field 'image'",
        "manifest.jsonl:3: field 'image'",
        "manifest.jsonl:4",
        "manifest.jsonl:5",
        "manifest.jsonl:6: field 'tags'",
    ]
    assert "broken.png" in data.skipped[1].reason and "no input" in data.skipped[3].reason


def test_manifest_split_mix_is_an_error(tmp_path: Path) -> None:
    path = write_manifest(tmp_path / "m.jsonl", [{"text": "a", "split": "train"}, {"text": "b"}])
    with pytest.raises(DataError, match="1 lines have a 'split' and 1 do not"):
        read_manifest(path)


# ---- format detection --------------------------------------------------------------------


def test_detect_format(tmp_path: Path) -> None:
    layouts = {
        "mnist": lambda d: write_mnist(d, "t10k", 1, gz=True),
        "cifar": lambda d: (d / "batches.meta").write_bytes(b""),
        "audio-folder": lambda d: write_wav(d / "yes" / "a.wav"),
        "image-folder": lambda d: write_image(d / "train" / "cat" / "a.png"),
        "table-splits": lambda d: write_lines(d / "train.tsv", ["text\tlabel"]),
        "parallel": lambda d: [write_lines(d / "raw" / f"val.{x}.gz", ["a"]) for x in ("en", "de")],
    }
    for name, make in layouts.items():
        (tmp_path / name).mkdir()
        make(tmp_path / name)
        assert detect_format(tmp_path / name) == name
    assert detect_format(write_lines(tmp_path / "t.csv", ["text,label"])) == "table"
    assert detect_format(write_manifest(tmp_path / "t.jsonl", [{"text": "a"}])) == "table"
    assert detect_format(write_manifest(tmp_path / "m.jsonl", [{"image": "a.png"}])) == "manifest"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="known formats: image-folder, cifar"):
        detect_format(tmp_path / "empty")
    assert {f.name for f in FORMATS} == {*layouts, "table", "manifest"}

"""TextData and AudioData: reading, tokenizer and feature statistics from train only, batches,
masks, training-only augmentation, run-folder artifacts and checkpoint state."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from longmm.data import AudioData, TextData
from longmm.data.audio import AudioAugment, LogMel
from longmm.data.text import TextTokenizer
from longmm.errors import DataError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"

# Three classes, each with its own words, so that every split holds every class.
WORDS = {
    "neg": ["awful", "boring", "dull", "bad"],
    "neu": ["plain", "average", "okay", "usual"],
    "pos": ["great", "lovely", "bright", "good"],
}


class _FakeTrainer:
    def __init__(self, training: bool) -> None:
        self.training = training


def text_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` (label, sentence) rows of varied length, labels cycling through WORDS."""
    rng = np.random.default_rng(seed)
    labels = list(WORDS)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        words = rng.choice(WORDS[label], size=int(rng.integers(2, 9)))
        rows.append((label, "the film was " + " ".join(words)))
    return rows


def write_tsv(path: Path, rows: list[tuple[str, str]], header: bool = True) -> Path:
    lines = (["sentence\tlabel"] if header else []) + [f"{text}\t{label}" for label, text in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_split_folder(root: Path, test_extra: str = "") -> Path:
    """train/dev/test TSVs without header: column 0 the label, column 1 the text."""
    root.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train", 30, 0), ("dev", 9, 1), ("test", 9, 2)):
        rows = text_rows(n, seed)
        if name == "test" and test_extra:
            rows[0] = (rows[0][0], f"{rows[0][1]} {test_extra}")
        text = "".join(f"{label}\t{sentence}\n" for label, sentence in rows)
        (root / f"{name}.tsv").write_text(text, encoding="utf-8")
    return root


def split_folder_data(root: Path, **kwargs) -> TextData:
    options = {"format": "table-splits", "text_column": 1, "label_column": 0, "header": False}
    return TextData(root=str(root), **(options | {"min_frequency": 1, "batch_size": 8} | kwargs))


# ---- TextData ---------------------------------------------------------------------------------


def test_text_table_with_header_is_split_by_seed_and_padded_per_batch(tmp_path: Path) -> None:
    path = write_tsv(tmp_path / "reviews.tsv", text_rows(60))
    dm = TextData(root=str(path), text_column="sentence", batch_size=8, max_length=64, seed=3)
    dm.setup("fit")
    assert dm.classes == ["neg", "neu", "pos"] and dm.num_classes == 3
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 48, "val": 6, "test": 6}
    again = TextData(root=str(path), text_column="sentence", seed=3)
    assert [s.where for s in again.samples["test"]] == [s.where for s in dm.samples["test"]]

    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"text", "text_mask", "label", "index"}
    ids, mask = batch["text"], batch["text_mask"]
    assert ids.dtype == torch.long and mask.dtype == torch.bool and ids.shape == mask.shape
    assert ids.shape[1] == int(mask.sum(dim=1).max()) < 64  # the longest row, not max_length
    assert (ids[~mask] == dm.pad_id).all() and (ids[mask] != dm.pad_id).all()
    assert batch["label"].shape == (8,) and int(batch["label"].max()) < 3


def test_text_truncates_to_max_length(tmp_path: Path) -> None:
    path = write_tsv(tmp_path / "reviews.tsv", text_rows(30))
    dm = TextData(root=str(path), text_column="sentence", max_length=4, batch_size=30)
    dm.setup("fit")
    assert int(dm.datasets["train"].lengths.max()) == 4


def test_text_jsonl_table_with_bpe(tmp_path: Path) -> None:
    path = tmp_path / "reviews.jsonl"
    path.write_text(
        "".join(json.dumps({"review": t, "stars": lab}) + "\n" for lab, t in text_rows(40)),
        encoding="utf-8",
    )
    dm = TextData(root=str(path), text_column="review", label_column="stars", tokenizer_kind="bpe")
    dm.setup("fit")
    assert dm.tokenizer is not None and dm.tokenizer.kind == "bpe"
    assert dm.classes == ["neg", "neu", "pos"]
    assert sum(len(ds) for ds in dm.datasets.values()) == 40


def test_tokenizer_is_trained_on_the_training_split_only(tmp_path: Path) -> None:
    root = write_split_folder(tmp_path / "sst", test_extra="zyzzyva")
    dm = split_folder_data(root)
    dm.setup("fit")
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 30, "val": 9, "test": 9}
    vocab = dm.tokenizer.backend.get_vocab()
    assert "zyzzyva" not in vocab and "lovely" in vocab
    assert dm.vocab_size == len(vocab) and dm.pad_id == 0


def test_save_artifacts_writes_tokenizer_and_data_json(tmp_path: Path) -> None:
    dm = split_folder_data(write_split_folder(tmp_path / "sst"))
    dm.setup("fit")
    run = tmp_path / "run"
    dm.save_artifacts(run)
    data = json.loads((run / "data.json").read_text())
    prep = data["preprocessing"]
    assert prep["classes"] == ["neg", "neu", "pos"] and prep["pad_id"] == 0
    assert prep["vocab_size"] == dm.vocab_size and prep["max_length"] == 256
    saved = TextTokenizer.load(run / "tokenizer.json")
    assert saved.encode("the film was lovely") == dm.tokenizer.encode("the film was lovely")
    assert not list(run.glob(".*.tmp"))  # atomic writes leave no temporary files


def _all_ids(dm: TextData, split: str) -> torch.Tensor:
    return dm.datasets[split].values


def test_state_dict_restores_the_same_tokenizer_without_retraining(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_split_folder(tmp_path / "sst")
    first = split_folder_data(root)
    first.setup("fit")
    state = first.state_dict()
    assert isinstance(state["tokenizer"], str)

    def no_training(*args, **kwargs):
        raise AssertionError("a restored tokenizer must not be retrained")

    with monkeypatch.context() as patch:
        patch.setattr(TextTokenizer, "train", classmethod(no_training))
        restored = split_folder_data(root)
        restored.load_state_dict(state)
        restored.setup("fit")
    assert torch.equal(_all_ids(restored, "test"), _all_ids(first, "test"))

    # Lightning calls setup() before load_state_dict(): a different vocabulary is trained
    # first, and the restore must encode the datasets again with the saved one.
    late = split_folder_data(root, vocab_size=40)
    late.setup("fit")
    assert late.vocab_size != first.vocab_size
    late.load_state_dict(state)
    assert late.vocab_size == first.vocab_size
    for split in ("train", "val", "test"):
        assert torch.equal(_all_ids(late, split), _all_ids(first, split))


def test_token_dropout_runs_in_training_only(tmp_path: Path) -> None:
    dm = split_folder_data(write_split_folder(tmp_path / "sst"), token_dropout=0.5)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    ids, mask = batch["text"].clone(), batch["text_mask"]

    dm.trainer = _FakeTrainer(training=False)
    assert torch.equal(dm.on_after_batch_transfer(dict(batch, text=ids.clone()), 0)["text"], ids)

    dm.trainer = _FakeTrainer(training=True)
    dropped = dm.on_after_batch_transfer(dict(batch, text=ids.clone()), 0)["text"]
    changed = dropped != ids
    assert changed.any() and (dropped[changed] == dm.tokenizer.unk_id).all()
    assert not changed[~mask].any()  # padding is never replaced


def test_pii_is_redacted_when_asked(tmp_path: Path) -> None:
    rows = text_rows(30)
    rows[0] = (rows[0][0], "Mail me at alice.smith@example.com or call +1 555 123 4567")
    path = write_tsv(tmp_path / "reviews.tsv", rows)
    texts = [
        s.inputs["text"]
        for dm in [TextData(root=str(path), text_column="sentence", redact_pii=True)]
        for split in dm.samples.values()
        for s in split
    ]
    mail = next(t for t in texts if t.startswith("Mail"))
    assert mail == "Mail me at [EMAIL] or call [PHONE]"
    plain = TextData(root=str(path), text_column="sentence", lowercase=True)
    texts = [s.inputs["text"] for split in plain.samples.values() for s in split]
    assert "mail me at alice.smith@example.com or call +1 555 123 4567" in texts


def test_unknown_label_in_dev_names_the_line(tmp_path: Path) -> None:
    root = write_split_folder(tmp_path / "sst")
    with (root / "dev.tsv").open("a", encoding="utf-8") as fh:
        fh.write("angry\tthe film was loud\n")
    with pytest.raises(DataError, match=r"dev\.tsv:10: field '0'.*unknown label 'angry'"):
        _ = split_folder_data(root).samples


def test_malformed_rows_stop_or_are_skipped_and_listed(tmp_path: Path) -> None:
    rows = text_rows(30)
    path = write_tsv(tmp_path / "reviews.tsv", rows)
    lines = path.read_text().splitlines()
    lines[3] = "a row without its label"  # line 4 of the file
    lines[5] = "\u200b\u200b\tpos"  # line 6: only invisible characters
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"reviews\.tsv:4: field 'label': missing"):
        _ = TextData(root=str(path), text_column="sentence").samples

    dm = TextData(root=str(path), text_column="sentence", skip_bad=True, min_frequency=1)
    assert sum(len(v) for v in dm.samples.values()) == 28
    skipped = [str(b) for b in dm.skipped]
    assert any("reviews.tsv:4" in s for s in skipped)
    assert any("reviews.tsv:6" in s and "nothing left after cleaning" in s for s in skipped)
    dm.setup("fit")
    dm.save_artifacts(tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "data.json").read_text())
    assert len(saved["skipped"]) == 2


def test_bad_jsonl_line_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "reviews.jsonl"
    path.write_text('{"text": "fine film", "label": "pos"}\n{"text": "oops"\n')
    with pytest.raises(DataError, match=r"reviews\.jsonl:2: invalid JSON"):
        _ = TextData(root=str(path)).samples


def test_text_refuses_audio_sets(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="built-in audio set, not text"):
        _ = TextData(format="spoken-digits").samples
    with pytest.raises(DataError, match="data.root"):
        _ = TextData(root=str(tmp_path / "nope")).samples


def test_missing_text_column_or_text_names_file_and_line(tmp_path: Path) -> None:
    root = tmp_path / "sst"
    root.mkdir()
    for name in ("train", "dev", "test"):
        write_tsv(root / f"{name}.tsv", text_rows(9))
    options = {"root": str(root), "format": "table-splits"}
    with pytest.raises(DataError, match=r"train\.tsv:1: no column 'review' in the header"):
        _ = TextData(**options, text_column="review").samples
    with (root / "test.tsv").open("a", encoding="utf-8") as fh:
        fh.write("pos\n")  # line 11: one field, the label column is missing
    with pytest.raises(DataError, match=r"test\.tsv:11: field 'label': missing"):
        _ = TextData(**options, text_column="sentence").samples


def test_length_buckets_pad_less_and_depend_on_seed_and_epoch(tmp_path: Path) -> None:
    from longmm.data.modules import LengthBucketSampler

    lengths = torch.randint(1, 60, (1000,))
    sampler = LengthBucketSampler(lengths, batch_size=32, seed=1, pool=10)
    first = list(sampler)
    assert len(first) == len(sampler) == 32
    assert sorted(i for b in first for i in b) == list(range(1000))
    assert list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first
    padded = sum(len(b) * int(lengths[b].max()) for b in first)
    shuffled = torch.randperm(1000).split(32)
    assert padded < 0.6 * sum(len(b) * int(lengths[b].max()) for b in shuffled)
    ordered = [i for b in LengthBucketSampler(lengths, 32, shuffle=False) for i in b]
    assert lengths[ordered].tolist() == sorted(lengths.tolist())

    path = write_tsv(tmp_path / "reviews.tsv", text_rows(60))
    dm = TextData(root=str(path), text_column="sentence", batch_size=8, bucket_by_length=True)
    dm.setup("fit")
    seen = [int(i) for b in dm.train_dataloader() for i in b["index"]]
    assert sorted(seen) == list(range(48))
    widths = [b["text"].shape[1] for b in dm.test_dataloader()]
    assert widths == sorted(widths)


# ---- AudioData --------------------------------------------------------------------------------

TONES = {"0": 300.0, "1": 700.0, "2": 1500.0}


def tone(hz: float, n: int, rate: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t) + 0.02 * rng.standard_normal(n)).astype(np.float32)


def write_fsdd(root: Path, rate: int = 8000, takes: int = 4) -> Path:
    """FSDD-named clips ``{digit}_{speaker}_{take}.wav``: 3 digits, 2 speakers, varied lengths;
    take 0 is louder so that statistics over it differ from the training split's."""
    root.mkdir(parents=True, exist_ok=True)
    for digit, hz in TONES.items():
        for s, speaker in enumerate(("ann", "bob")):
            for take in range(takes):
                n = int(rate * (0.2 + 0.1 * take + 0.05 * s))
                wave = tone(hz, n, rate, seed=take) * (1.0 if take else 0.1)
                soundfile.write(root / f"{digit}_{speaker}_{take}.wav", wave, rate)
    return root


def fsdd_data(root: Path, **kwargs) -> AudioData:
    options = {"test_takes": [0], "split": (0.75, 0.25, 0.0), "batch_size": 6}
    return AudioData(root=str(root), **(options | kwargs))


def test_audio_batches_have_features_and_a_frame_mask(tmp_path: Path) -> None:
    dm = fsdd_data(write_fsdd(tmp_path / "rec"))
    dm.setup("fit")
    assert dm.classes == ["0", "1", "2"]
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 14, "val": 4, "test": 6}
    batch = next(iter(dm.test_dataloader()))
    assert set(batch) == {"audio", "audio_lengths", "label", "index"}
    lengths = batch["audio_lengths"].clone()
    assert batch["audio"].shape == (6, int(lengths.max()))

    out = dm.on_after_batch_transfer(batch, 0)
    assert set(out) == {"audio", "audio_mask", "label", "index"}
    feats, mask = out["audio"], out["audio_mask"]
    frames = 1 + int(lengths.max()) // dm.hop_length
    assert feats.shape == (6, 40, frames) and mask.shape == (6, frames)
    assert mask.sum(dim=1).tolist() == (1 + lengths // dm.hop_length).tolist()
    assert lengths.min() < lengths.max()  # some rows are padded
    assert (feats.permute(0, 2, 1)[~mask] == 0).all()

    # A short clip's real frames equal its features computed alone, unpadded.
    i = int(lengths.argmin())
    alone = dm.datasets["test"].item(int(out["index"][i]))
    single = dm.on_after_batch_transfer(
        {"audio": alone[None], "audio_lengths": torch.tensor([len(alone)])}, 0
    )
    n = int(mask[i].sum())
    assert torch.allclose(feats[i, :, :n], single["audio"][0], atol=1e-4)


def test_feature_statistics_come_from_the_training_split_only(tmp_path: Path) -> None:
    dm = fsdd_data(write_fsdd(tmp_path / "rec"))
    dm.setup("fit")
    logmel = LogMel(8000, n_fft=256, hop_length=80, n_mels=40)

    def real_frames(split: str) -> torch.Tensor:
        ds = dm.datasets[split]
        feats = [logmel(ds.item(i)[None])[0][0] for i in range(len(ds))]  # (n_mels, F) each
        return torch.cat(feats, dim=1)  # (n_mels, all frames)

    train = real_frames("train")
    assert torch.allclose(dm.normalizer.mean, train.mean(dim=1), atol=1e-4)
    assert torch.allclose(dm.normalizer.std, train.std(dim=1, unbiased=False), rtol=1e-3)
    test = real_frames("test")
    assert (dm.normalizer.mean - test.mean(dim=1)).abs().max() > 0.5

    restored = fsdd_data(tmp_path / "rec")
    restored.load_state_dict(dm.state_dict())
    restored.setup("fit")  # keeps the restored statistics
    assert torch.allclose(restored.normalizer.mean, dm.normalizer.mean)
    assert dm.preprocessing_state()["feature_std"] == restored.preprocessing_state()["feature_std"]


def test_audio_augmentation_runs_in_training_only(tmp_path: Path) -> None:
    augment = AudioAugment(time_mask=4, freq_mask=6, noise_snr_db=10.0, gain_db=6.0)
    dm = fsdd_data(write_fsdd(tmp_path / "rec"), augment=augment)
    plain = fsdd_data(tmp_path / "rec")
    dm.setup("fit")
    plain.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    reference = plain.on_after_batch_transfer(dict(batch), 0)

    dm.trainer = _FakeTrainer(training=False)
    evaluated = dm.on_after_batch_transfer(dict(batch), 0)
    assert torch.equal(evaluated["audio"], reference["audio"])

    dm.trainer = _FakeTrainer(training=True)
    trained = dm.on_after_batch_transfer(dict(batch), 0)
    assert not torch.allclose(trained["audio"], reference["audio"])
    assert torch.equal(trained["audio_mask"], reference["audio_mask"])


def test_audio_is_resampled_and_long_clips_are_cropped(tmp_path: Path) -> None:
    root = write_fsdd(tmp_path / "rec", rate=16000)
    dm = fsdd_data(root, max_seconds=0.3)
    dm.setup("fit")
    source_lengths = sorted(
        len(s.inputs["audio"].samples) for split in dm.samples.values() for s in split
    )
    kept = sorted(int(n) for ds in dm.datasets.values() for n in ds.lengths)
    expected = sorted(min(-(-n // 2), 2400) for n in source_lengths)  # ceil(n / 2), cropped
    assert kept == expected and max(kept) == 2400
    clip = dm.datasets["train"].item(0).numpy()
    peak = np.argmax(np.abs(np.fft.rfft(clip))) * 8000 / len(clip)
    label = dm.classes[int(dm.datasets["train"].labels[0])]
    assert abs(peak - TONES[label]) < 10  # the pitch survives resampling


def test_audio_target_names_the_class(tmp_path: Path) -> None:
    dm = fsdd_data(write_fsdd(tmp_path / "rec"), target="speaker")
    assert dm.classes == ["ann", "bob"]
    assert all(s.label == s.targets["speaker"] for s in dm.samples["train"])
    with pytest.raises(DataError, match=r"field 'accent': missing"):
        _ = fsdd_data(tmp_path / "rec", target="accent").samples


def test_a_file_that_is_not_audio_is_named(tmp_path: Path) -> None:
    root = write_fsdd(tmp_path / "rec")
    (root / "1_ann_9.wav").write_text("this is not a recording")
    with pytest.raises(DataError, match=r"1_ann_9\.wav: not readable audio"):
        _ = fsdd_data(root).samples
    dm = fsdd_data(root, skip_bad=True)
    assert any("1_ann_9.wav" in str(b) for b in dm.skipped)
    assert sum(len(v) for v in dm.samples.values()) == 24


def test_audio_refuses_other_formats(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="built-in image set, not audio"):
        _ = AudioData(format="digits").samples
    with pytest.raises(DataError, match="test_takes"):
        _ = AudioData(format="spoken-digits", test_takes=[0]).samples


def test_embedded_spoken_digits() -> None:
    dm = AudioData(format="spoken-digits", batch_size=16)
    dm.setup("fit")
    assert dm.num_classes == 10
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 1600, "val": 200, "test": 200}
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    feats, mask = batch["audio"], batch["audio_mask"]
    assert feats.shape[:2] == (16, 40) and mask.shape == (16, feats.shape[2])
    real = feats.permute(0, 2, 1)[mask]  # (real frames, n_mels)
    assert abs(float(real.mean())) < 0.5 and 0.5 < float(real.std()) < 1.5


# ---- real data (slow) -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "sst2").is_dir(), reason=f"{SHARED / 'sst2'} is missing")
def test_sst2_splits() -> None:
    dm = TextData(root=str(SHARED / "sst2"), format="table-splits", text_column="sentence")
    dm.setup("fit")
    assert {k: len(v) for k, v in dm.datasets.items()} == {
        "train": 60614,
        "val": 6735,
        "test": 872,
    }
    assert dm.num_classes == 2
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert batch["text"].shape == batch["text_mask"].shape


@pytest.mark.slow
@pytest.mark.skipif(
    not (SHARED / "fsdd" / "recordings").is_dir(), reason=f"{SHARED / 'fsdd'} is missing"
)
def test_fsdd_official_test_split() -> None:
    root = str(SHARED / "fsdd" / "recordings")
    dm = AudioData(root=root, format="audio-folder", test_takes=[0, 1, 2, 3, 4])
    assert len(dm.samples["test"]) == 300 and dm.num_classes == 10
    speakers = AudioData(
        root=root, format="audio-folder", test_takes=[0, 1, 2, 3, 4], target="speaker"
    )
    assert speakers.num_classes == 6

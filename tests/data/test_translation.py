"""Parallel text: the synthetic numbers set, ParallelData, length-bucketed batches."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

from longmm.data.builtin import BUILTINS
from longmm.data.builtin.numbers import make_number_pairs
from longmm.data.text import TextTokenizer
from longmm.data.translation import BucketBatchSampler, ParallelData, encode_sources
from longmm.errors import DataError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"

EN = [
    "A man rides a bike.",
    "Two dogs play in the park.",
    "A woman reads a book.",
    "Children play football outside.",
    "A man reads a newspaper.",
    "Two women walk in the park.",
    "A dog runs on the beach.",
    "A girl rides a horse.",
]
DE = [
    "Ein Mann fährt Fahrrad.",
    "Zwei Hunde spielen im Park.",
    "Eine Frau liest ein Buch.",
    "Kinder spielen draußen Fußball.",
    "Ein Mann liest eine Zeitung.",
    "Zwei Frauen gehen im Park spazieren.",
    "Ein Hund rennt am Strand.",
    "Ein Mädchen reitet ein Pferd.",
]


def write(path: Path, lines: list[str]) -> None:
    data = "".join(line + "\n" for line in lines).encode()
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A Multi30k-shaped folder; the test split holds a word that training never sees."""
    raw = tmp_path / "m30k" / "raw"
    raw.mkdir(parents=True)
    write(raw / "train.en.gz", EN * 3)
    write(raw / "train.de.gz", DE * 3)
    write(raw / "val.en", EN[:3])
    write(raw / "val.de", DE[:3])
    write(raw / "test_2016_flickr.en", ["A zebra rides a bike.", *EN[3:5]])
    write(raw / "test_2016_flickr.de", ["Ein Zebra fährt Fahrrad.", *DE[3:5]])
    return tmp_path / "m30k"


def test_numbers_set_is_synthetic_deterministic_and_distinct() -> None:
    a, b = make_number_pairs(300, seed=1), make_number_pairs(300, seed=1)
    assert a == b and a != make_number_pairs(300, seed=2)
    assert len({en for en, _ in a}) == 300
    assert all(not any(ch.isdigit() for ch in en + de) for en, de in a)
    pairs = dict(make_number_pairs(3000))
    assert any(en.startswith("at half past") for en in pairs)
    for en, de in pairs.items():
        if en == "at half past twelve":
            assert de == "um halb eins"
        if en.startswith("forty-two ") and en.endswith("kilograms"):
            assert de == "zweiundvierzig Kilogramm"
    numbers = BUILTINS["numbers"]
    assert numbers.modality == "parallel" and "synthetic" in numbers.description


def test_parallel_folder_batches(folder: Path) -> None:
    dm = ParallelData(root=str(folder), vocab_size=300, min_frequency=1, batch_size=4)
    dm.setup("fit")
    assert {k: len(v) for k, v in dm.samples.items()} == {"train": 24, "val": 3, "test": 3}
    tok = dm.fitted_tokenizer()
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"src", "src_mask", "tgt_in", "tgt_out", "tgt_mask", "index"}
    b, t = batch["tgt_in"].shape
    assert batch["tgt_out"].shape == (b, t) and batch["src"].shape[0] == b
    assert (batch["tgt_in"][:, 0] == tok.bos_id).all()
    lengths = batch["tgt_mask"].sum(dim=1)
    for i in range(b):
        n = int(lengths[i])
        assert batch["tgt_out"][i, n - 1] == tok.eos_id  # </s> closes every target
        assert (batch["tgt_out"][i, n:] == 0).all() and (batch["tgt_in"][i, n:] == 0).all()
        assert torch.equal(batch["tgt_in"][i, 1:n], batch["tgt_out"][i, : n - 1])
        s = int(batch["src_mask"][i].sum())
        assert batch["src"][i, s - 1] == tok.eos_id  # sources end in </s>
        index = int(batch["index"][i])
        assert tok.decode(batch["tgt_out"][i]) == dm.references("train")[index]
    assert dm.references("test")[0] == "Ein Zebra fährt Fahrrad."


def test_tokenizer_is_trained_on_the_training_split_only(folder: Path) -> None:
    dm = ParallelData(root=str(folder), vocab_size=2000, min_frequency=1)
    vocab = dm.fitted_tokenizer().backend.get_vocab()
    assert "ĠFahrrad" in vocab and "ĠMann" in vocab  # both sides of train
    assert "Ġzebra" not in vocab and "ĠZebra" not in vocab  # test-only words


def test_state_dict_restores_the_tokenizer(folder: Path, tmp_path: Path) -> None:
    dm = ParallelData(root=str(folder), vocab_size=300, min_frequency=1)
    dm.setup("fit")
    state = dm.state_dict()
    other = ParallelData(root=str(folder), vocab_size=200, min_frequency=1)  # another vocab
    other.setup("fit")
    other.load_state_dict(state)
    assert other.vocab_size == dm.vocab_size
    a, b = next(iter(dm.val_dataloader())), next(iter(other.val_dataloader()))
    assert all(torch.equal(a[k], b[k]) for k in a)  # datasets re-encoded
    dm.save_artifacts(tmp_path / "run")
    loaded = TextTokenizer.load(tmp_path / "run" / "tokenizer.json")
    assert loaded.backend.to_str() == dm.fitted_tokenizer().backend.to_str()
    assert (tmp_path / "run" / "data.json").is_file()


def test_long_pairs_dropped_from_train_and_cropped_elsewhere(folder: Path) -> None:
    with pytest.raises(DataError, match="every training pair"):
        ParallelData(root=str(folder), vocab_size=300, min_frequency=1, max_length=2).setup("fit")
    dm = ParallelData(root=str(folder), vocab_size=2000, min_frequency=1, max_length=7)
    dm.setup("fit")
    assert dm.dropped_long > 0 and len(dm.datasets["train"]) == 24 - dm.dropped_long
    assert len(dm.datasets["test"]) == 3
    for split in ("train", "test"):
        batch = next(iter(dm._bucketed(split, 8, shuffle=False)))
        assert batch["src"].shape[1] <= 7 and batch["tgt_in"].shape[1] <= 7
    assert dm.summary()["dropped_long"] == dm.dropped_long


def test_bucketed_batches_are_deterministic_and_length_sorted() -> None:
    lengths = torch.randint(1, 50, (1000,), generator=torch.Generator().manual_seed(0))
    sampler = BucketBatchSampler(lengths, batch_size=32, seed=3, chunk_batches=10)
    first = list(sampler)
    assert len(first) == len(sampler)
    assert sorted(i for b in first for i in b) == list(range(1000))
    assert first == list(BucketBatchSampler(lengths, 32, seed=3, chunk_batches=10))
    sampler.sampler.set_epoch(1)  # what Lightning calls at each epoch start
    assert list(sampler) != first
    spread = sum(int(lengths[b].max() - lengths[b].min()) for b in first) / len(first)
    assert spread < 10  # random batches would spread over nearly the whole 1..49 range
    evaluation = list(BucketBatchSampler(lengths, 100, shuffle=False))
    flat = [i for b in evaluation for i in b]
    assert len(evaluation) == 10 and (lengths[flat].diff() >= 0).all()


def test_numbers_format_and_errors(tmp_path: Path) -> None:
    dm = ParallelData(format="numbers", vocab_size=500)
    assert sum(len(v) for v in dm.samples.values()) == 6000 and dm.classes == []
    with pytest.raises(DataError, match="data.root"):
        _ = ParallelData().samples
    with pytest.raises(DataError, match="no such folder"):
        _ = ParallelData(root=str(tmp_path / "missing")).samples
    with pytest.raises(DataError, match="unknown format"):
        _ = ParallelData(root=str(tmp_path), format="table").samples
    with pytest.raises(DataError, match="image set"):
        _ = ParallelData(format="digits").samples
    raw = tmp_path / "bad"
    raw.mkdir()
    for split in ("train", "val", "test_2016_flickr"):
        write(raw / f"{split}.en", EN)
        write(raw / f"{split}.de", DE[:-1])
    with pytest.raises(DataError, match="aligned"):
        _ = ParallelData(root=str(raw)).samples


def test_encode_sources(folder: Path) -> None:
    dm = ParallelData(root=str(folder), vocab_size=300, min_frequency=1)
    tok = dm.fitted_tokenizer()
    src, mask = encode_sources(tok, ["A man  rides a bike.", "Two dogs"], max_length=4)
    assert src.shape == (2, 4) and mask[1].sum() <= 4
    assert src[0, 3] == tok.eos_id  # cropped to max_length with </s> kept
    full, _ = encode_sources(tok, ["A man rides a bike."], max_length=64)
    assert torch.equal(full[0, :3], src[0, :3])  # the double space was cleaned


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "multi30k").is_dir(), reason=f"{SHARED / 'multi30k'} missing")
def test_multi30k_splits_and_vocabulary() -> None:
    dm = ParallelData(root=str(SHARED / "multi30k"), vocab_size=8000)
    dm.setup("fit")
    assert {k: len(v) for k, v in dm.samples.items()} == {"train": 29000, "val": 1014, "test": 1000}
    assert dm.vocab_size == 8000
    assert dm.references("test")[0] == "Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt."
    lengths = dm.datasets["train"].tgt_lengths.float()
    assert 10 < float(lengths.mean()) < 25

"""Parallel text for translation: sentence pairs, one shared BPE vocabulary, and batches
bucketed by length.

``ParallelData`` reads the embedded ``numbers`` set or a folder of aligned
``{split}.{lang}[.gz]`` files (Multi30k's layout: ``train``, ``val``, ``test_2016_flickr``).
A single byte-level BPE tokenizer is trained on both sides of the TRAINING split only,
saved to the run folder as ``tokenizer.json`` and carried in checkpoints.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset, Sampler

from longmm.data.builtin import BUILTINS
from longmm.data.datamodule import EpochSeededSampler, SourceDataModule
from longmm.data.modules import tokenizer_from_json
from longmm.data.schema import SPLITS, TEXT, Sample, SourceData
from longmm.data.sources.parallel import read_parallel_dir
from longmm.data.text import TextTokenizer, clean_text
from longmm.errors import DataError

TARGET = "target_text"
PARALLEL = "parallel"
_ENCODE_CHUNK = 4096  # texts per tokenizer call

Batch = dict[str, Tensor]


# ---- encoding -------------------------------------------------------------------------------


def token_rows(tokenizer: TextTokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Ids of each text after ``clean_text`` (Unicode NFKC, invisible characters dropped,
    whitespace collapsed), without special tokens and untruncated."""
    rows: list[list[int]] = []
    for start in range(0, len(texts), _ENCODE_CHUNK):
        chunk = [clean_text(t) for t in texts[start : start + _ENCODE_CHUNK]]
        encoded = tokenizer.backend.encode_batch(chunk, add_special_tokens=False)
        rows += [e.ids for e in encoded]
    return rows


def source_ids(tokenizer: TextTokenizer, row: list[int], max_length: int) -> list[int]:
    """A source row as the model reads it: cropped to ``max_length - 1`` tokens, then ``</s>``."""
    return [*row[: max_length - 1], tokenizer.eos_id]


def encode_sources(
    tokenizer: TextTokenizer, texts: Sequence[str], max_length: int
) -> tuple[Tensor, Tensor]:
    """Sentences to translate -> ``src (B, S)`` padded ids and ``src_mask (B, S)``."""
    rows = [
        torch.tensor(source_ids(tokenizer, r, max_length)) for r in token_rows(tokenizer, texts)
    ]
    src = pad_sequence(rows, batch_first=True, padding_value=tokenizer.pad_id)
    return src, src != tokenizer.pad_id


# ---- datasets, collation, batching ----------------------------------------------------------


class PairDataset(Dataset):
    """Encoded pairs: source ids (ending in ``</s>``) and target ids (no special tokens),
    stored flat with offsets; ``references`` are the raw target lines, for BLEU."""

    def __init__(
        self, sources: list[list[int]], targets: list[list[int]], references: list[str]
    ) -> None:
        if not len(sources) == len(targets) == len(references):
            raise ValueError("sources, targets and references must have the same length")
        self.src_lengths = torch.tensor([len(r) for r in sources], dtype=torch.long)
        self.tgt_lengths = torch.tensor([len(r) for r in targets], dtype=torch.long)
        self.src = torch.tensor([i for r in sources for i in r], dtype=torch.long)
        self.tgt = torch.tensor([i for r in targets for i in r], dtype=torch.long)
        self.src_offsets = _offsets(self.src_lengths)
        self.tgt_offsets = _offsets(self.tgt_lengths)
        self.references = references

    def __len__(self) -> int:
        return len(self.references)

    def __getitem__(self, i: int) -> Batch:
        return {
            "src": self.src[self.src_offsets[i] : self.src_offsets[i + 1]],
            "tgt": self.tgt[self.tgt_offsets[i] : self.tgt_offsets[i + 1]],
            "index": torch.tensor(i),
        }

    @property
    def lengths(self) -> Tensor:
        """Source plus target tokens per pair: the bucketing key."""
        return self.src_lengths + self.tgt_lengths + 1


def _offsets(lengths: Tensor) -> Tensor:
    return torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])


@dataclass(frozen=True)
class PadPairs:
    """Collate pairs into ``src (B, S)``, ``src_mask``, ``tgt_in (B, T)`` (``<s>`` + target),
    ``tgt_out (B, T)`` (target + ``</s>``), ``tgt_mask`` and ``index``. Masks are True on
    real tokens; padding is ``pad_id`` on the right. Picklable, for worker processes."""

    pad_id: int
    bos_id: int
    eos_id: int

    def __call__(self, items: list[Batch]) -> Batch:
        src = pad_sequence([it["src"] for it in items], batch_first=True, padding_value=self.pad_id)
        bos = torch.tensor([self.bos_id])
        eos = torch.tensor([self.eos_id])
        tgt_in = [torch.cat([bos, it["tgt"]]) for it in items]
        tgt_out = [torch.cat([it["tgt"], eos]) for it in items]
        tgt_in_t = pad_sequence(tgt_in, batch_first=True, padding_value=self.pad_id)
        tgt_out_t = pad_sequence(tgt_out, batch_first=True, padding_value=self.pad_id)
        lengths = torch.tensor([len(t) for t in tgt_out])
        tgt_mask = torch.arange(tgt_out_t.shape[1])[None, :] < lengths[:, None]
        return {
            "src": src,
            "src_mask": src != self.pad_id,
            "tgt_in": tgt_in_t,
            "tgt_out": tgt_out_t,
            "tgt_mask": tgt_mask,
            "index": torch.stack([it["index"] for it in items]),
        }


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of similar length, so that little time goes to padding.

    Training (``shuffle``): a permutation that depends only on (seed, epoch) is cut into
    chunks of ``chunk_batches * batch_size`` pairs; each chunk is sorted by length and cut
    into batches, and the order of all batches is shuffled again by (seed, epoch). A resumed
    run therefore sees the same batches. Evaluation: sorted by length, no shuffling.
    ``sampler`` is the seeded permutation; Lightning calls its ``set_epoch``.
    """

    def __init__(
        self,
        lengths: Tensor,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        chunk_batches: int = 50,
    ) -> None:
        if batch_size < 1 or chunk_batches < 1:
            raise ValueError("batch_size and chunk_batches must be >= 1")
        self.lengths = lengths
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.chunk = batch_size * chunk_batches
        self.sampler = EpochSeededSampler(len(lengths), seed) if shuffle else None

    def _batches(self, order: list[int]) -> list[list[int]]:
        keys = self.lengths.tolist()
        ordered = sorted(order, key=lambda i: keys[i])  # stable: ties keep the given order
        return [ordered[s : s + self.batch_size] for s in range(0, len(ordered), self.batch_size)]

    def __iter__(self) -> Iterator[list[int]]:
        if self.sampler is None:
            yield from self._batches(list(range(len(self.lengths))))
            return
        order = list(self.sampler)
        batches = []
        for start in range(0, len(order), self.chunk):
            batches += self._batches(order[start : start + self.chunk])
        g = torch.Generator().manual_seed(self.sampler.seed * 100_003 + self.sampler.epoch + 1)
        for i in torch.randperm(len(batches), generator=g).tolist():
            yield batches[i]

    def __len__(self) -> int:
        n = len(self.lengths)
        if self.sampler is None:
            return math.ceil(n / self.batch_size)
        full, rest = divmod(n, self.chunk)
        return full * math.ceil(self.chunk / self.batch_size) + math.ceil(rest / self.batch_size)


# ---- the data module ------------------------------------------------------------------------


class ParallelData(SourceDataModule):
    """Translation pairs: the embedded SYNTHETIC ``numbers`` set (``format="numbers"``,
    English -> German, split by ``split`` and ``seed``) or a ``"parallel"`` folder of aligned
    ``{prefix}.{lang}[.gz]`` files in ``root`` or ``root/raw``; ``splits`` maps ``train``,
    ``val`` and ``test`` to file prefixes (default Multi30k's ``train``, ``val``,
    ``test_2016_flickr``).

    Text is cleaned (Unicode NFKC, invisible characters dropped, whitespace collapsed, case
    kept) and tokenized with one byte-level BPE vocabulary of at most ``vocab_size`` tokens,
    trained on the source and target sides of the training split. Sources end in ``</s>``.

    ``max_length`` counts tokens with their special token: a training pair whose source or
    target is longer is left out (counted in ``data.json``: ``dropped_long``); validation and
    test sources and targets are cropped to it instead, and BLEU always compares against the
    raw reference lines. Batches hold ``src (B, S)``, ``src_mask``, ``tgt_in (B, T)``
    (``<s>`` + target), ``tgt_out (B, T)`` (target + ``</s>``), ``tgt_mask`` and ``index``;
    see ``BucketBatchSampler`` for the length bucketing (``bucket_chunk`` batches a chunk).
    """

    def __init__(
        self,
        root: str | None = None,
        format: str = PARALLEL,
        src_lang: str = "en",
        tgt_lang: str = "de",
        splits: dict[str, str] | None = None,
        vocab_size: int = 8000,
        min_frequency: int = 2,
        max_length: int = 128,
        bucket_chunk: int = 50,
        **common: Any,
    ) -> None:
        super().__init__(root=root, format=format, **common)
        if max_length < 2:
            raise DataError("data.max_length", f"must be >= 2 (a token and </s>), got {max_length}")
        if splits is not None and set(splits) != set(SPLITS):
            raise DataError("data.splits", f"must map exactly {list(SPLITS)}, got {list(splits)}")
        self.src_lang = src_lang
        self.tgt_lang = tgt_lang
        self.file_splits = dict(splits) if splits else None
        self.requested_vocab_size = vocab_size
        self.min_frequency = min_frequency
        self.max_length = max_length
        self.bucket_chunk = bucket_chunk
        self.tokenizer: TextTokenizer | None = None
        self.dropped_long = 0

    # -- reading -----------------------------------------------------------------------------
    def read_source(self) -> SourceData:
        if self.format in BUILTINS:
            kind = BUILTINS[self.format].modality
            if kind != PARALLEL:
                raise DataError("data.format", f"{self.format!r} is a built-in {kind} set")
            return BUILTINS[self.format].read()
        if self.format != PARALLEL:
            known = [PARALLEL, *(b.name for b in BUILTINS.values() if b.modality == PARALLEL)]
            raise DataError(
                "data.format", f"unknown format {self.format!r} (choose from {', '.join(known)})"
            )
        if self.root is None:
            raise DataError("data.root", "a folder of parallel text files is required")
        return read_parallel_dir(
            self.root, self.src_lang, self.tgt_lang, self.file_splits, skip_bad=self.skip_bad
        )

    @cached_property
    def samples(self) -> dict[str, list[Sample]]:
        """Pairs per split; a pair needs a source ``text`` and a ``target_text``."""
        splits = self._split(self.source)
        out: dict[str, list[Sample]] = {}
        for name in SPLITS:
            items = splits.get(name, [])
            for s in items:
                for key, value in ((TEXT, s.inputs.get(TEXT)), (TARGET, s.targets.get(TARGET))):
                    if not isinstance(value, str) or not value.strip():
                        raise DataError(s.where, f"field {key!r}: missing or empty")
            if not items:
                raise DataError(self.source_name(), f"split {name!r} is empty")
            out[name] = items
        self._split_problems = []
        return out

    @property
    def classes(self) -> list[str]:  # type: ignore[override]
        return []  # translation has no classes

    # -- tokenizer ---------------------------------------------------------------------------
    def fitted_tokenizer(self) -> TextTokenizer:
        """The restored tokenizer, or one trained now on both sides of the training split."""
        if self.tokenizer is None:
            train = self.samples["train"]
            texts = [clean_text(s.inputs[TEXT]) for s in train]
            texts += [clean_text(s.targets[TARGET]) for s in train]
            self.tokenizer = TextTokenizer.train(
                texts, vocab_size=self.requested_vocab_size, min_frequency=self.min_frequency
            )
        return self.tokenizer

    @property
    def vocab_size(self) -> int:
        return self.fitted_tokenizer().vocab_size

    @property
    def pad_id(self) -> int:
        return self.fitted_tokenizer().pad_id

    # -- datasets and loaders ----------------------------------------------------------------
    def build_datasets(self, samples: dict[str, list[Sample]]) -> dict[str, Dataset]:
        tok = self.fitted_tokenizer()
        out: dict[str, Dataset] = {}
        for name, items in samples.items():
            src_rows = token_rows(tok, [s.inputs[TEXT] for s in items])
            tgt_rows = token_rows(tok, [s.targets[TARGET] for s in items])
            refs = [s.targets[TARGET] for s in items]
            keep = range(len(items))
            if name == "train":
                keep = [
                    i
                    for i in keep
                    if len(src_rows[i]) < self.max_length and len(tgt_rows[i]) < self.max_length
                ]
                self.dropped_long = len(items) - len(keep)
                if not keep:
                    raise DataError(
                        "data.max_length",
                        f"every training pair is longer than {self.max_length} tokens",
                    )
            sources = [source_ids(tok, src_rows[i], self.max_length) for i in keep]
            targets = [tgt_rows[i][: self.max_length - 1] for i in keep]
            empty = next((i for i in keep if not tgt_rows[i]), None)
            if empty is not None:
                raise DataError(items[empty].where, "field 'target_text': no tokens")
            out[name] = PairDataset(sources, targets, [refs[i] for i in keep])
        return out

    def collate_fn(self) -> PadPairs:
        tok = self.fitted_tokenizer()
        return PadPairs(tok.pad_id, tok.bos_id, tok.eos_id)

    def train_dataloader(self) -> DataLoader:
        return self._bucketed("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._bucketed("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._bucketed("test", self.eval_batch_size, shuffle=False)

    def _bucketed(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        ds = self.datasets[split]
        assert isinstance(ds, PairDataset)
        sampler = BucketBatchSampler(ds.lengths, batch_size, self.seed, shuffle, self.bucket_chunk)
        return DataLoader(
            ds,
            batch_sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=self.collate_fn(),
        )

    def references(self, split: str) -> list[str]:
        """Raw target lines of ``split``, by the ``index`` its batches carry."""
        ds = self.datasets[split]
        assert isinstance(ds, PairDataset)
        return ds.references

    # -- what a run folder keeps -------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": self.source_name(),
            "description": self.source.description,
            "languages": f"{self.src_lang} -> {self.tgt_lang}",
            "splits": {name: {"count": len(items)} for name, items in self.samples.items()},
            "skipped": [str(b) for b in self.source.skipped],
        }
        for name, ds in self.datasets.items():
            if isinstance(ds, PairDataset):
                out["splits"][name]["tokens"] = {
                    "source_mean": round(float(ds.src_lengths.float().mean()), 2),
                    "target_mean": round(float(ds.tgt_lengths.float().mean()), 2),
                    "source_max": int(ds.src_lengths.max()),
                    "target_max": int(ds.tgt_lengths.max()),
                }
        out["dropped_long"] = self.dropped_long
        return out

    def preprocessing_state(self) -> dict[str, Any]:
        tok = self.tokenizer
        return {
            "src_lang": self.src_lang,
            "tgt_lang": self.tgt_lang,
            "max_length": self.max_length,
            "source_ends_with_eos": True,
            "tokenizer": "bpe",
            "vocab_size": tok.vocab_size if tok else None,
            "pad_id": tok.pad_id if tok else None,
            "bos_id": tok.bos_id if tok else None,
            "eos_id": tok.eos_id if tok else None,
        }

    def save_artifacts(self, run_dir: Path) -> None:
        super().save_artifacts(run_dir)
        self.fitted_tokenizer().save(Path(run_dir) / "tokenizer.json")

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"preprocessing": json.dumps(self.preprocessing_state())}
        if self.tokenizer is not None:
            state["tokenizer"] = self.tokenizer.backend.to_str()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        text = state.get("tokenizer")
        if text is None:
            return
        if self.tokenizer is not None and self.tokenizer.backend.to_str() == text:
            return
        self.tokenizer = tokenizer_from_json(text)
        if self.datasets:
            # Lightning runs setup() before it restores the data module's state: the
            # datasets were encoded with a freshly trained vocabulary, so encode them again.
            self.datasets = self.build_datasets(self.samples)

"""Text and audio classification data modules, beside ``ImageData``.

Both hold variable-length items (token ids, waveforms) and pad them per batch, so their
loaders take a ``collate_fn``; everything else (reading, splits, labels, run folder) is
``SourceDataModule``'s.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import torch
from tokenizers import Tokenizer
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from longmm.data.audio import AudioAugment, LogMel, resample
from longmm.data.builtin import BUILTINS
from longmm.data.collate import Batch as Batch
from longmm.data.collate import Collate as Collate
from longmm.data.collate import CollatingDataModule as CollatingDataModule
from longmm.data.collate import LengthBucketSampler as LengthBucketSampler
from longmm.data.collate import PadTokens as PadTokens
from longmm.data.collate import RaggedDataset as RaggedDataset
from longmm.data.collate import collate_waveforms as collate_waveforms
from longmm.data.collate import map_samples as map_samples
from longmm.data.collate import source_format as source_format
from longmm.data.collate import stack_targets as stack_targets
from longmm.data.schema import AUDIO, TEXT, Sample, SourceData, Waveform
from longmm.data.sources import (
    read_audio_folder,
    read_manifest,
    read_table,
    read_table_splits,
)
from longmm.data.sources.base import sorted_classes
from longmm.data.text import TextTokenizer, TokenDropout, clean_text, pretrained_path
from longmm.errors import DataError

TEXT_FORMATS = ("table", "table-splits", "manifest")
AUDIO_FORMATS = ("audio-folder", "manifest")
# Tried in this order for each split of a "table-splits" folder.
_SPLIT_STEMS = {"train": ("train",), "val": ("dev", "val"), "test": ("test",)}
_TABLE_EXTENSIONS = (".tsv", ".csv", ".jsonl")
_ENCODE_CHUNK = 4096  # texts per tokenizer call: bounds the padded (chunk, L) tensor
_STATS_CHUNK = 256  # clips per log-mel call when fitting the feature statistics


# ---- text ---------------------------------------------------------------------------------


def table_split_files(root: Path) -> dict[str, str | None]:
    """File names of a split-table folder: ``train``, ``dev`` or ``val``, ``test`` with the
    first of .tsv/.csv/.jsonl found (gzipped or not); ``None`` for a missing val/test."""
    found: dict[str, str | None] = {}
    for split, stems in _SPLIT_STEMS.items():
        names = [f"{stem}{ext}" for stem in stems for ext in _TABLE_EXTENSIONS]
        found[split] = next(
            (n for n in names if (root / n).is_file() or (root / f"{n}.gz").is_file()), None
        )
    return found


def tokenizer_from_json(text: str, where: str = "checkpoint tokenizer") -> TextTokenizer:
    try:
        backend = Tokenizer.from_str(text)
    except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
        raise DataError(where, f"not a valid tokenizer ({exc})") from exc
    return TextTokenizer(backend)


class TextData(CollatingDataModule):
    """Text classification from a table (one CSV/TSV/JSONL file split by ``seed``), a folder
    of split tables (train + dev/val + test), or a multimodal manifest's text column.

    Texts are cleaned with ``clean_text`` as they are read (``lowercase``, ``redact_pii``); a
    text that cleans to nothing is a bad row. The tokenizer is trained on the training split
    only, unless a checkpoint restored one or ``tokenizer`` names one to load instead: a
    ``tokenizer.json``, a folder holding one (a pretrained model's), or ``"minilm"`` for the
    packaged all-MiniLM-L6-v2. Such a tokenizer adds its model's special tokens ([CLS] ...
    [SEP]) within ``max_length``; ``tokenizer_kind``, ``vocab_size`` and ``min_frequency`` then
    do not apply. It is saved with the run like a trained one. Batches hold ``text (B, L)``
    ids padded to the batch's longest row (at most ``max_length``), ``text_mask (B, L)``,
    ``label``, ``index``; ``token_dropout`` replaces that share of real tokens with ``[UNK]``
    in training only. ``bucket_by_length`` batches texts of similar length together
    (``LengthBucketSampler``; one process only): far less padding, so a transformer reads
    short texts several times faster.
    """

    def __init__(
        self,
        root: str | None = None,
        format: str = "auto",
        text_column: str | int = "text",
        label_column: str | int = "label",
        header: bool | None = None,
        lowercase: bool = False,
        redact_pii: bool = False,
        tokenizer: str | None = None,
        tokenizer_kind: Literal["bpe", "wordpiece"] = "wordpiece",
        vocab_size: int = 8000,
        min_frequency: int = 2,
        max_length: int = 256,
        token_dropout: float = 0.0,
        bucket_by_length: bool = False,
        **common: Any,
    ) -> None:
        super().__init__(root=root, format=format, **common)
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.text_column = text_column
        self.label_column = label_column
        self.header = header
        self.lowercase = lowercase
        self.redact_pii = redact_pii
        self.tokenizer_source = tokenizer
        self.tokenizer_kind = tokenizer_kind
        self.requested_vocab_size = vocab_size
        self.min_frequency = min_frequency
        self.max_length = max_length
        self.token_dropout = token_dropout
        self.bucket_by_length = bucket_by_length
        self.dropout = TokenDropout(token_dropout)  # checks p now; ids set with the tokenizer
        self.tokenizer: TextTokenizer | None = None

    # -- reading -----------------------------------------------------------------------------
    def read_source(self) -> SourceData:
        fmt = source_format(self.format, self.root, TEXT, TEXT_FORMATS)
        return map_samples(self._read(fmt), self._cleaned, self.skip_bad)

    def _read(self, fmt: str) -> SourceData:
        if fmt in BUILTINS:
            return BUILTINS[fmt].read()
        assert self.root is not None  # source_format checked it
        columns = {
            "text_column": self.text_column,
            "label_column": self.label_column,
            "header": self.header,
            "skip_bad": self.skip_bad,
        }
        if fmt == "table":
            return read_table(self.root, **columns)
        if fmt == "table-splits":
            names = table_split_files(Path(self.root))
            if names["train"] is None:
                raise DataError(self.root, "no train.tsv, train.csv or train.jsonl")
            return read_table_splits(
                self.root, train=names["train"], val=names["val"], test=names["test"], **columns
            )
        return read_manifest(self.root, skip_bad=self.skip_bad)

    def _cleaned(self, sample: Sample) -> Sample:
        text = sample.inputs.get(TEXT)
        if not isinstance(text, str):
            raise DataError(sample.where, "field 'text': missing")
        cleaned = clean_text(text, lowercase=self.lowercase, redact_pii=self.redact_pii)
        if not cleaned:
            raise DataError(sample.where, f"field 'text': nothing left after cleaning {text!r}")
        return replace(sample, inputs={**sample.inputs, TEXT: cleaned})

    # -- tokenizer ---------------------------------------------------------------------------
    def fitted_tokenizer(self) -> TextTokenizer:
        """The restored tokenizer, the one ``tokenizer`` names, or one trained now on the
        training split's texts."""
        if self.tokenizer is None and self.tokenizer_source is not None:
            self._use_tokenizer(TextTokenizer.load(pretrained_path(self.tokenizer_source)))
        if self.tokenizer is None:
            texts = [s.inputs[TEXT] for s in self.samples["train"]]
            self._use_tokenizer(
                TextTokenizer.train(
                    texts,
                    kind=self.tokenizer_kind,
                    vocab_size=self.requested_vocab_size,
                    min_frequency=self.min_frequency,
                    lowercase=self.lowercase,
                )
            )
        assert self.tokenizer is not None
        return self.tokenizer

    def _use_tokenizer(self, tokenizer: TextTokenizer) -> None:
        self.tokenizer = tokenizer
        self.dropout.unk_id = tokenizer.unk_id
        self.dropout.pad_id = tokenizer.pad_id

    @property
    def vocab_size(self) -> int:
        """The tokenizer's actual vocabulary (at most the requested size); trains it if needed."""
        return self.fitted_tokenizer().vocab_size

    @property
    def pad_id(self) -> int:
        return self.fitted_tokenizer().pad_id

    # -- datasets and batches ----------------------------------------------------------------
    def build_datasets(self, samples: dict[str, list[Sample]]) -> dict[str, Dataset]:
        tokenizer = self.fitted_tokenizer()
        return {name: self._encoded(items, tokenizer) for name, items in samples.items()}

    def _encoded(self, items: list[Sample], tokenizer: TextTokenizer) -> RaggedDataset:
        values, lengths = [], []
        for start in range(0, len(items), _ENCODE_CHUNK):
            chunk = items[start : start + _ENCODE_CHUNK]
            ids, mask = tokenizer.encode_batch([s.inputs[TEXT] for s in chunk], self.max_length)
            values.append(ids[mask])  # real tokens, row after row
            lengths.append(mask.sum(dim=1))
        all_lengths = torch.cat(lengths)
        if (all_lengths == 0).any():
            # A row of zero tokens would be all padding: attention over it has nothing to see.
            empty = items[int((all_lengths == 0).nonzero()[0])]
            raise DataError(empty.where, "field 'text': the tokenizer gives no tokens")
        labels = torch.tensor([self.label_index(s) for s in items], dtype=torch.long)
        return RaggedDataset(TEXT, torch.cat(values), all_lengths, labels)

    def collate_fn(self) -> Collate:
        return PadTokens(self.fitted_tokenizer().pad_id)

    def train_dataloader(self) -> DataLoader:
        if not self.bucket_by_length:
            return super().train_dataloader()
        return self._bucketed(self.datasets["train"], self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        if not self.bucket_by_length:
            return super().val_dataloader()
        return self._bucketed(self.datasets["val"], self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        if not self.bucket_by_length:
            return super().test_dataloader()
        return self._bucketed(self.datasets["test"], self.eval_batch_size, shuffle=False)

    def _bucketed(self, ds: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        assert isinstance(ds, RaggedDataset)
        return DataLoader(
            ds,
            batch_sampler=LengthBucketSampler(ds.lengths, batch_size, self.seed, shuffle),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed),
            collate_fn=self.collate_fn(),
        )

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        if TEXT in batch and self.token_dropout > 0:
            self.dropout.train(self.is_training())
            batch[TEXT] = self.dropout(batch[TEXT], batch[f"{TEXT}_mask"])
        return batch

    # -- what a run folder keeps -------------------------------------------------------------
    def preprocessing_state(self) -> dict[str, Any]:
        return {
            "classes": self.classes,
            "lowercase": self.lowercase,
            "redact_pii": self.redact_pii,
            "max_length": self.max_length,
            "tokenizer": self.tokenizer.kind if self.tokenizer else self.tokenizer_kind,
            "tokenizer_source": self.tokenizer_source or "trained on the training split",
            "special_tokens_added": self.tokenizer.special_tokens_added if self.tokenizer else 0,
            "vocab_size": self.tokenizer.vocab_size if self.tokenizer else None,
            "pad_id": self.tokenizer.pad_id if self.tokenizer else None,
        }

    def save_artifacts(self, run_dir: Path) -> None:
        super().save_artifacts(run_dir)
        self.fitted_tokenizer().save(Path(run_dir) / "tokenizer.json")

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.tokenizer is not None:
            state["tokenizer"] = self.tokenizer.backend.to_str()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        text = state.get("tokenizer")
        if text is None:
            return
        if self.tokenizer is not None and self.tokenizer.backend.to_str() == text:
            return
        self._use_tokenizer(tokenizer_from_json(text))
        if self.datasets:
            # Lightning runs setup() before it restores the data module's state, so the
            # datasets were encoded with a freshly trained vocabulary: encode them again.
            self.datasets = self.build_datasets(self.samples)


# ---- audio --------------------------------------------------------------------------------


class FeatureNormalizer(nn.Module):
    """Per-mel-bin mean and std of log-mel features over real frames of the training split."""

    def __init__(self, n_mels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("std", torch.ones(n_mels))

    @torch.no_grad()
    def fit(self, batches: Iterable[tuple[Tensor, Tensor]]) -> FeatureNormalizer:
        """``batches`` of ``(features (B, n_mels, F), frame_mask (B, F))``; padding ignored."""
        total = torch.zeros(len(self.mean), dtype=torch.float64)
        squares = torch.zeros_like(total)
        count = 0
        for feats, mask in batches:
            real = mask[:, None, :].to(torch.float64)  # (B, 1, F)
            x = feats.to(torch.float64)
            total += (x * real).sum(dim=(0, 2))
            squares += (x.square() * real).sum(dim=(0, 2))
            count += int(mask.sum())
        if count == 0:
            raise DataError("train split", "no audio frames to compute feature statistics")
        mean = total / count
        # float64 sums keep E[x^2] - E[x]^2 from cancelling badly over millions of frames.
        std = (squares / count - mean.square()).clamp_min(0).sqrt()
        self.mean.copy_(mean.float())
        self.std.copy_(std.float().clamp_min(1e-5))
        return self

    def forward(self, feats: Tensor) -> Tensor:
        return (feats - self.mean[None, :, None]) / self.std[None, :, None]


class AudioData(CollatingDataModule):
    """Audio classification: the embedded ``spoken-digits``, an audio folder (class folders
    or FSDD names ``{digit}_{speaker}_{take}.wav``; ``test_takes`` puts those takes in the
    test split), or a multimodal manifest's audio column.

    ``target`` names the class: ``"label"``, or another target such as ``"speaker"``. Clips
    are resampled to ``sample_rate`` once; a clip longer than ``max_seconds`` keeps only its
    first ``max_seconds`` (shorter clips keep their length and are padded per batch).
    Loaders give ``audio (B, T)`` waveforms and ``audio_lengths (B,)``; after the transfer
    to the device the batch holds ``audio (B, n_mels, frames)`` log-mel features normalized
    with the training split's per-bin mean/std, ``audio_mask (B, frames)`` True on real
    frames (padded frames hold 0 but only the mask says what is real), ``label``, ``index``.
    ``augment`` runs on training batches only.
    """

    def __init__(
        self,
        root: str | None = None,
        format: str = "auto",
        sample_rate: int = 8000,
        max_seconds: float = 2.0,
        n_mels: int = 40,
        n_fft: int = 256,
        hop_length: int = 80,
        target: str = "label",
        test_takes: list[int] | None = None,
        augment: AudioAugment | None = None,
        **common: Any,
    ) -> None:
        super().__init__(root=root, format=format, **common)
        if max_seconds <= 0:
            raise ValueError(f"max_seconds must be > 0, got {max_seconds}")
        self.sample_rate = sample_rate
        self.max_seconds = max_seconds
        self.n_mels = n_mels
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.target = target
        self.test_takes = list(test_takes) if test_takes is not None else None
        self.augment = augment
        self.logmel = LogMel(sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels)
        self.normalizer: FeatureNormalizer | None = None

    @property
    def max_samples(self) -> int:
        return max(1, math.floor(self.max_seconds * self.sample_rate))

    # -- reading -----------------------------------------------------------------------------
    def read_source(self) -> SourceData:
        fmt = source_format(self.format, self.root, AUDIO, AUDIO_FORMATS)
        if self.test_takes is not None and fmt != "audio-folder":
            raise DataError("data.test_takes", f"only for format 'audio-folder', not {fmt!r}")
        data = map_samples(self._read(fmt), self._with_target, self.skip_bad)
        if self.target != "label":
            labels = {s.label for samples in data.splits.values() for s in samples}
            data = replace(data, classes=sorted_classes(labels) if labels else None)
        return data

    def _read(self, fmt: str) -> SourceData:
        if fmt in BUILTINS:
            return BUILTINS[fmt].read()
        assert self.root is not None  # source_format checked it
        if fmt == "audio-folder":
            return read_audio_folder(self.root, skip_bad=self.skip_bad, test_takes=self.test_takes)
        return read_manifest(self.root, skip_bad=self.skip_bad)

    def _with_target(self, sample: Sample) -> Sample:
        """The sample, checked to hold audio, with ``target`` as its label (the base class
        reads ``sample.label``); a copy, so that the source's samples stay as read."""
        if not isinstance(sample.inputs.get(AUDIO), Waveform):
            raise DataError(sample.where, "field 'audio': missing")
        if self.target == "label":
            return sample
        value = sample.targets.get(self.target)
        if value is None:
            raise DataError(sample.where, f"field {self.target!r}: missing (the target)")
        return replace(sample, targets={**sample.targets, "label": str(value)})

    # -- datasets and batches ----------------------------------------------------------------
    def build_datasets(self, samples: dict[str, list[Sample]]) -> dict[str, Dataset]:
        out = {}
        for name, items in samples.items():
            labels = torch.tensor([self.label_index(s) for s in items], dtype=torch.long)
            out[name] = RaggedDataset.from_items(AUDIO, [self._waveform(s) for s in items], labels)
        if self.normalizer is None:  # a restored checkpoint brings its own statistics
            self.normalizer = FeatureNormalizer(self.n_mels).fit(self._features(out["train"]))
        return out

    def _waveform(self, sample: Sample) -> Tensor:
        wave: Waveform = sample.inputs[AUDIO]
        samples = resample(wave.samples, wave.sample_rate, self.sample_rate)
        return torch.as_tensor(samples[: self.max_samples], dtype=torch.float32)

    def _features(self, ds: RaggedDataset) -> Iterator[tuple[Tensor, Tensor]]:
        """Log-mel features of ``ds`` in chunks, shortest clips together to pad little."""
        order = torch.argsort(ds.lengths).tolist()
        for start in range(0, len(order), _STATS_CHUNK):
            batch = collate_waveforms([ds[i] for i in order[start : start + _STATS_CHUNK]])
            yield self.logmel(batch[AUDIO], batch[f"{AUDIO}_lengths"])

    def collate_fn(self) -> Collate:
        return collate_waveforms

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        lengths = batch.pop(f"{AUDIO}_lengths", None)
        if lengths is None:  # not a waveform batch, or already turned into features
            return batch
        assert self.normalizer is not None, "call setup() first"
        wave = batch[AUDIO]  # (B, T)
        self.logmel.to(wave.device)
        self.normalizer.to(wave.device)
        if self.augment is not None:
            self.augment.train(self.is_training())
            wave = self.augment.augment_waveform(wave, lengths)
        feats, mask = self.logmel(wave, lengths)  # (B, n_mels, F), (B, F)
        feats = self.normalizer(feats)
        if self.augment is not None:
            feats = self.augment.augment_features(feats, mask)
        # 0 is the training mean after normalization: a neutral value for layers that see the
        # padding anyway (convolutions), rather than the loud log(offset) of silence.
        batch[AUDIO] = feats.masked_fill(~mask[:, None, :], 0.0)
        batch[f"{AUDIO}_mask"] = mask
        return batch

    # -- what a run folder keeps -------------------------------------------------------------
    def preprocessing_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "classes": self.classes,
            "target": self.target,
            "sample_rate": self.sample_rate,
            "max_seconds": self.max_seconds,
            "n_mels": self.n_mels,
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
        }
        if self.normalizer is not None:
            state["feature_mean"] = self.normalizer.mean.tolist()
            state["feature_std"] = self.normalizer.std.tolist()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        prep = json.loads(state.get("preprocessing", "{}"))
        if "feature_mean" not in prep:
            return
        if len(prep["feature_mean"]) != self.n_mels:
            raise DataError(
                "checkpoint data state",
                f"{len(prep['feature_mean'])} mel bins saved, but n_mels={self.n_mels}",
            )
        self.normalizer = FeatureNormalizer(self.n_mels)
        self.normalizer.mean.copy_(torch.tensor(prep["feature_mean"]))
        self.normalizer.std.copy_(torch.tensor(prep["feature_std"]))

"""What the data modules that batch variable-length items share: the source format check,
ragged datasets, padding, length buckets, and ``CollatingDataModule``."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset, Sampler

from longmm.data.audio import lengths_to_mask, pad_waveforms
from longmm.data.builtin import BUILTINS
from longmm.data.datamodule import SourceDataModule
from longmm.data.schema import AUDIO, TEXT, Sample, SourceData
from longmm.data.sources import (
    detect_format,
)
from longmm.data.sources.base import Problems
from longmm.errors import DataError

Batch = dict[str, Tensor]
Collate = Callable[[list[Batch]], Batch]


# ---- shared pieces ------------------------------------------------------------------------


def source_format(format: str, root: str | None, modality: str, allowed: tuple[str, ...]) -> str:
    """The built-in set or the file format to read: checked against ``modality``."""
    if format in BUILTINS:
        if BUILTINS[format].modality != modality:
            kind = BUILTINS[format].modality
            raise DataError("data.format", f"{format!r} is a built-in {kind} set, not {modality}")
        return format
    if root is None:
        raise DataError("data.root", f"a path is required for format {format!r}")
    if not Path(root).exists():
        raise DataError("data.root", f"{root} does not exist")
    fmt = detect_format(root) if format == "auto" else format
    if fmt not in allowed:
        known = [*allowed, *(b.name for b in BUILTINS.values() if b.modality == modality)]
        raise DataError(
            "data.format", f"{fmt!r} is not a {modality} format (choose from {', '.join(known)})"
        )
    return fmt


def map_samples(
    data: SourceData, convert: Callable[[Sample], Sample], skip_bad: bool
) -> SourceData:
    """``data`` with every sample passed through ``convert``.

    A sample for which ``convert`` raises ``DataError`` stops the run, or with ``skip_bad``
    is dropped and listed with the reader's own skipped items.
    """
    problems = Problems(skip_bad)
    splits: dict[str, list[Sample]] = {}
    for name, samples in data.splits.items():
        kept = []
        for sample in samples:
            try:
                kept.append(convert(sample))
            except DataError as err:
                problems.bad(err.where, err.reason)
        splits[name] = kept
    return replace(data, splits=splits, skipped=[*data.skipped, *problems.items])


class RaggedDataset(Dataset):
    """Variable-length 1-D items stored as one flat tensor and offsets.

    One tensor rather than a list of thousands: worker processes then share its memory
    instead of copying each small tensor as Python touches its reference count.
    """

    def __init__(self, key: str, values: Tensor, lengths: Tensor, labels: Tensor) -> None:
        if len(lengths) != len(labels) or int(lengths.sum()) != len(values):
            raise ValueError("lengths must match the labels and sum to the number of values")
        self.key = key
        self.values = values
        self.lengths = lengths
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
        self.labels = labels

    @classmethod
    def from_items(cls, key: str, items: list[Tensor], labels: Tensor) -> RaggedDataset:
        lengths = torch.tensor([len(t) for t in items], dtype=torch.long)
        return cls(key, torch.cat(items), lengths, labels)

    def __len__(self) -> int:
        return len(self.labels)

    def item(self, i: int) -> Tensor:
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def __getitem__(self, i: int) -> Batch:
        return {self.key: self.item(i), "label": self.labels[i], "index": torch.tensor(i)}


def stack_targets(items: list[Batch]) -> Batch:
    return {key: torch.stack([it[key] for it in items]) for key in ("label", "index")}


@dataclass(frozen=True)
class PadTokens:
    """Collate token ids into ``text (B, L)``, padded to the batch's longest row, and
    ``text_mask (B, L)`` True on real tokens. A picklable object, for worker processes."""

    pad_id: int = 0

    def __call__(self, items: list[Batch]) -> Batch:
        rows = [it[TEXT] for it in items]
        ids = pad_sequence(rows, batch_first=True, padding_value=self.pad_id)  # (B, L)
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
        mask = lengths_to_mask(lengths, ids.shape[1])  # (B, L)
        return {TEXT: ids, f"{TEXT}_mask": mask, **stack_targets(items)}


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of items of similar length, so that little of each padded batch is padding.

    For training (``shuffle=True``) the order depends only on (seed, epoch), like
    ``EpochSeededSampler``: items are shuffled, sorted by length within pools of ``pool``
    batches, cut into batches, and the batches shuffled. For evaluation (``shuffle=False``)
    the batches go from shortest to longest. A batch sampler: one process only (Lightning
    cannot split it across DDP ranks).
    """

    def __init__(
        self, lengths: Tensor, batch_size: int, seed: int = 0, shuffle: bool = True, pool: int = 50
    ) -> None:
        self.lengths = lengths
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.pool = pool
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at each epoch start
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        n, size = len(self.lengths), self.batch_size
        if not self.shuffle:
            order = torch.argsort(self.lengths, stable=True)
            return iter([order[i : i + size].tolist() for i in range(0, n, size)])
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(n, generator=g)
        batches = []
        for start in range(0, n, size * self.pool):
            pool = order[start : start + size * self.pool]
            pool = pool[torch.argsort(self.lengths[pool], stable=True)]
            batches += [pool[i : i + size].tolist() for i in range(0, len(pool), size)]
        return iter([batches[i] for i in torch.randperm(len(batches), generator=g).tolist()])

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)


def collate_waveforms(items: list[Batch]) -> Batch:
    """Collate waveforms into ``audio (B, T)`` zero-padded and ``audio_lengths (B,)``."""
    audio, lengths = pad_waveforms([it[AUDIO] for it in items])
    return {AUDIO: audio, f"{AUDIO}_lengths": lengths, **stack_targets(items)}


class CollatingDataModule(SourceDataModule):
    """A ``SourceDataModule`` whose loaders batch variable-length items with a collate_fn."""

    def collate_fn(self) -> Collate:
        raise NotImplementedError

    def is_training(self) -> bool:
        # The data module is not an nn.Module, so Lightning does not flip train/eval for us.
        return self.trainer is not None and self.trainer.training

"""Trained long-context readers: networks that score every document token as part of the
answer (:mod:`~longmm.reading.readers.networks`: efficient attention, hierarchical, recurrent
memory), and :class:`TrainedReader`, which answers needle samples with one
(:mod:`~longmm.reading.readers.trained_reader`). Training them: :mod:`longmm.reading.trained`."""

from longmm.reading.readers.networks import (
    READERS,
    AttentionReader,
    HierarchicalReader,
    MemoryReader,
    question_match,
)
from longmm.reading.readers.trained_reader import TrainedReader, load_reader, save_reader

__all__ = [
    "READERS",
    "AttentionReader",
    "HierarchicalReader",
    "MemoryReader",
    "TrainedReader",
    "load_reader",
    "question_match",
    "save_reader",
]

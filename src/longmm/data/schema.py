"""The sample schema shared by every source: values keyed by modality, plus targets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

TEXT = "text"
IMAGE = "image"
AUDIO = "audio"
MODALITIES = (TEXT, IMAGE, AUDIO)
SPLITS = ("train", "val", "test")


@dataclass
class Sample:
    """One example as read from a source, before preprocessing.

    ``inputs`` maps a modality name to its raw value: ``str`` for text, a ``uint8`` array
    ``(H, W, C)`` for an image, a ``Waveform`` for audio. Absent modalities are absent keys.
    ``targets`` maps a target name (``label``, ``speaker``, ``target_text``...) to its value.
    ``where`` names the origin (file and line) for error messages.
    """

    inputs: dict[str, Any]
    targets: dict[str, Any] = field(default_factory=dict)
    where: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> Any:
        return self.targets.get("label")


@dataclass
class Waveform:
    """Mono audio as float32 in [-1, 1] at ``sample_rate`` Hz."""

    samples: np.ndarray  # (T,)
    sample_rate: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / float(self.sample_rate)


@dataclass
class BadItem:
    """An input that could not be read, kept for the report when ``skip_bad`` is on."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class SourceData:
    """What a source hands to a data module.

    ``splits`` maps split names to samples. A source without its own splits puts
    everything under ``"all"`` and the data module splits it deterministically.
    """

    splits: dict[str, list[Sample]]
    classes: list[str] | None = None
    skipped: list[BadItem] = field(default_factory=list)
    description: str = ""

    @property
    def has_own_splits(self) -> bool:
        return "all" not in self.splits

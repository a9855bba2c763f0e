"""Audio-visual pairs: each modality's corruption (noise, occlusion, SNR), images and clips
paired by label, and splits by take."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from longmm.data.schema import AUDIO, IMAGE, SPLITS, Sample
from longmm.data.sources.base import sorted_classes
from longmm.errors import DataError

NoiseColour = Literal["white", "pink"]

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


# ---- corruption ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Corruption:
    """Deterministic per-sample noise: the same pair of the same split always gets the same
    corruption, whatever the batch, epoch or worker (its generator is seeded by
    ``(seed, split, index)``), and train, val and test are corrupted alike.

    ``image_occlusion`` is the share of the image's area covered by a square block (set to 0,
    the background) at a random position; ``image_noise`` is the std of Gaussian pixel noise
    on the [0, 1] scale, added after the block and clipped to [0, 1]. ``audio_snr_db`` adds
    white or pink (1/f power) noise to the real samples of a clip at that signal-to-noise
    ratio (signal power: the clip's mean square); ``None`` adds none.
    """

    seed: int = 0
    image_noise: float = 0.0
    image_occlusion: float = 0.0
    audio_snr_db: float | None = None
    audio_noise: NoiseColour = "white"

    def __post_init__(self) -> None:
        if self.image_noise < 0:
            raise DataError("data.image_noise", f"must be >= 0, got {self.image_noise}")
        if not 0.0 <= self.image_occlusion <= 1.0:
            raise DataError(
                "data.image_occlusion", f"must be in [0, 1], got {self.image_occlusion}"
            )
        if self.audio_noise not in ("white", "pink"):
            raise DataError("data.audio_noise", f"'white' or 'pink', got {self.audio_noise!r}")

    def rng(self, split: str, index: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, SPLIT_CODES.get(split, 3), index, stream])

    def image(self, image: Tensor, split: str, index: int) -> Tensor:
        """``image`` uint8 ``(C, H, W)`` -> corrupted uint8 ``(C, H, W)``."""
        if self.image_noise == 0 and self.image_occlusion == 0:
            return image
        rng = self.rng(split, index, 0)
        x = image.numpy().astype(np.float32) / 255.0
        _, h, w = x.shape
        if self.image_occlusion > 0:
            side = min(max(1, round(math.sqrt(self.image_occlusion * h * w))), h, w)
            top = int(rng.integers(0, h - side + 1))
            left = int(rng.integers(0, w - side + 1))
            x[:, top : top + side, left : left + side] = 0.0
        if self.image_noise > 0:
            x = np.clip(x + rng.normal(0.0, self.image_noise, x.shape), 0.0, 1.0)
        return torch.from_numpy(np.round(x * 255.0).astype(np.uint8))

    def audio(self, wave: Tensor, split: str, index: int) -> Tensor:
        """``wave (T,)`` float32 -> ``(T,)`` with noise at ``audio_snr_db``."""
        if self.audio_snr_db is None or len(wave) == 0:
            return wave
        rng = self.rng(split, index, 1)
        noise = rng.standard_normal(len(wave))
        if self.audio_noise == "pink":
            noise = _pink(noise)
        noise /= np.sqrt(np.mean(noise**2)) + 1e-12
        power = float(wave.double().square().mean())
        scale = math.sqrt(power / 10.0 ** (self.audio_snr_db / 10.0))
        return wave + torch.from_numpy((noise * scale).astype(np.float32))


def _pink(white: np.ndarray) -> np.ndarray:
    """White noise shaped to a 1/f power spectrum (amplitude 1/sqrt(f)), no DC."""
    spectrum = np.fft.rfft(white)
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = np.inf
    return np.fft.irfft(spectrum / np.sqrt(f), n=len(white))


# ---- pairing ------------------------------------------------------------------------------


def pair_by_label(images: list[Sample], clips: list[Sample], split: str, seed: int) -> list[Sample]:
    """Pair each image of ``split`` with a clip of the same label from the same split.

    Each label's clips are shuffled once by ``(seed, split)``; the k-th image of that label
    (in the split's order) gets clip ``k mod n``. So every image is used exactly once, and
    clips repeat when a label has more images than clips (with other noise at each use: the
    audio noise is drawn per pair). The pairing is fixed: the same in every epoch.
    """
    rng = np.random.default_rng([seed, SPLIT_CODES[split], 7])
    by_label: dict[str, list[int]] = {}
    for i, clip in enumerate(clips):
        by_label.setdefault(str(clip.label), []).append(i)
    cycles = {label: rng.permutation(by_label[label]) for label in sorted_classes(by_label)}
    used: Counter[str] = Counter()
    pairs = []
    for image in images:
        label = str(image.label)
        cycle = cycles.get(label)
        if cycle is None:
            raise DataError(
                f"{split} split", f"no clip of label {label!r} to pair with {image.where}"
            )
        clip = clips[int(cycle[used[label] % len(cycle)])]
        used[label] += 1
        pairs.append(
            Sample(
                inputs={IMAGE: image.inputs[IMAGE], AUDIO: clip.inputs[AUDIO]},
                targets={"label": label, "speaker": str(clip.targets.get("speaker", "?"))},
                where=f"{image.where} + {clip.where}",
                meta={"image": image.where, "audio": clip.where},
            )
        )
    return pairs


def split_by_takes(
    clips: list[Sample], test_takes: list[int], val_takes: list[int], where: str
) -> dict[str, list[Sample]]:
    """FSDD clips by take number: ``test_takes`` to test, ``val_takes`` to val, others train."""
    test, val = set(test_takes), set(val_takes)
    if test & val:
        raise DataError("data.val_takes", f"takes {sorted(test & val)} are also test takes")
    out: dict[str, list[Sample]] = {name: [] for name in SPLITS}
    for clip in clips:
        take = clip.meta.get("take")
        if take is None:
            raise DataError(where, "the real set needs FSDD names {digit}_{speaker}_{take}.wav")
        out["test" if take in test else "val" if take in val else "train"].append(clip)
    return out


def labelled_subset(pairs: list[Sample], fraction: float, seed: int) -> list[Sample]:
    """A seeded, class-stratified ``fraction`` of ``pairs`` (at least one per label), in
    their original order: the labelled share of a semi-supervised experiment."""
    rng = np.random.default_rng([seed, 11])
    by_label: dict[str, list[int]] = {}
    for i, pair in enumerate(pairs):
        by_label.setdefault(str(pair.label), []).append(i)
    keep: list[int] = []
    for label in sorted_classes(by_label):
        rows = by_label[label]
        count = max(1, round(fraction * len(rows)))
        keep += rng.choice(rows, size=count, replace=False).tolist()
    return [pairs[i] for i in sorted(keep)]

"""Audio-visual digits: a digit image paired with a spoken digit of the same class.

Three sources, one batch layout:

* embedded (``root=None``): scikit-learn's 1,797 real 8x8 digit scans paired with longmm's
  2,000 SYNTHETIC spoken digits (``spoken-digits``, 6 synthetic speakers);
* real (``root`` a folder such as ``../shared/data``): the 10,000 MNIST t10k images of
  ``root/mnist`` paired with the 3,000 FSDD recordings of ``root/fsdd/recordings``;
* your own pairs (``format="manifest"``, ``root`` a JSONL file): one line per pair with
  ``image`` and ``audio`` paths (relative to the manifest), ``label``, optional ``speaker``
  and ``split``.

Batches (the contract other code builds on): ``image (B, C, H, W)`` float, normalized with the
training split's mean/std; ``audio (B, n_mels, frames)`` log-mel normalized per mel bin with
the training split's statistics, 0 on padded frames; ``audio_mask (B, frames)`` True on real
frames; ``label (B,)`` the digit's class index; ``speaker (B,)`` the paired clip's speaker
index (into ``speakers``); ``index (B,)`` the pair's position in its split. A modality named
in ``drop_at_test`` is absent (its keys removed) from validation, test and predict batches.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from longmm.data.audio import AudioAugment, LogMel, pad_waveforms, resample
from longmm.data.builtin import BUILTINS
from longmm.data.collate import Collate, CollatingDataModule, RaggedDataset, map_samples
from longmm.data.image import ImageAugment, ImageNormalizer, to_chw_uint8
from longmm.data.modules import FeatureNormalizer
from longmm.data.pairing import Corruption as Corruption
from longmm.data.pairing import NoiseColour
from longmm.data.pairing import labelled_subset as labelled_subset
from longmm.data.pairing import pair_by_label as pair_by_label
from longmm.data.pairing import split_by_takes as split_by_takes
from longmm.data.schema import AUDIO, IMAGE, SPLITS, Sample, SourceData, Waveform
from longmm.data.sources import read_audio_folder, read_manifest, read_mnist
from longmm.data.sources.base import sorted_classes
from longmm.data.splits import seeded_split
from longmm.errors import DataError

Batch = dict[str, Tensor]
AVFormat = Literal["auto", "embedded", "mnist-fsdd", "manifest"]

AV_MODALITIES = (IMAGE, AUDIO)
UNKNOWN_SPEAKER = "unknown"
_STATS_CHUNK = 256  # clips per log-mel call when fitting the feature statistics


# ---- datasets and batches -------------------------------------------------------------------


class AVPairDataset(Dataset):
    """One split of pairs: corrupted images ``uint8 (N, C, H, W)``, the split's distinct clips
    (stored once, in a ``RaggedDataset``) and which clip each pair uses; the audio noise is
    added per pair in ``__getitem__`` (deterministic, see ``Corruption``)."""

    def __init__(
        self,
        split: str,
        images: Tensor,
        clips: RaggedDataset,
        clip_of: Tensor,
        labels: Tensor,
        speakers: Tensor,
        corruption: Corruption,
    ) -> None:
        if not len(images) == len(clip_of) == len(labels) == len(speakers):
            raise ValueError("images, clip_of, labels and speakers must have one row per pair")
        self.split = split
        self.images = images
        self.clips = clips
        self.clip_of = clip_of
        self.labels = labels
        self.speakers = speakers
        self.corruption = corruption

    def __len__(self) -> int:
        return len(self.labels)

    def waveform(self, i: int) -> Tensor:
        return self.corruption.audio(self.clips.item(int(self.clip_of[i])), self.split, i)

    def __getitem__(self, i: int) -> Batch:
        return {
            IMAGE: self.images[i],
            AUDIO: self.waveform(i),
            "label": self.labels[i],
            "speaker": self.speakers[i],
            "index": torch.tensor(i),
        }


def collate_pairs(items: list[Batch]) -> Batch:
    """``image (B, C, H, W)`` uint8, ``audio (B, T)`` zero-padded, ``audio_lengths (B,)``,
    ``label``, ``speaker``, ``index``."""
    audio, lengths = pad_waveforms([it[AUDIO] for it in items])
    batch = {key: torch.stack([it[key] for it in items]) for key in (IMAGE, "label", "speaker")}
    batch["index"] = torch.stack([it["index"] for it in items])
    return {**batch, AUDIO: audio, f"{AUDIO}_lengths": lengths}


# ---- the data module ------------------------------------------------------------------------


class AVDigits(CollatingDataModule):
    """Audio-visual digits: each sample is a digit image and a spoken digit of the same class.

    Sources (``format="auto"`` picks by ``root``): ``root=None`` is the embedded set
    (scikit-learn digits + SYNTHETIC spoken digits); a folder is the real set, MNIST from
    ``root/mnist`` (or ``mnist_root``) and FSDD from ``root/fsdd/recordings`` (or
    ``fsdd_root``); a ``.jsonl`` file is a manifest of your own pairs.

    Splits, disjoint on both sides and fixed by ``seed``:

    * images: the image set's own train/test if it has both (val carved from train), else
      ``split`` of all its images (MNIST t10k: 7,000/1,000/2,000 with the default 0.7/0.1/0.2;
      embedded digits: 1,258/180/359);
    * clips, real: FSDD takes ``test_takes`` (0-4, the official test split) are test,
      ``val_takes`` (5-9) are validation, the other takes (10-49) train: every speaker and
      digit in each split (2,400/300/300 clips). Embedded: ``split`` of the 2,000 clips;
    * pairing: within a split only, by label (``pair_by_label``): every image once per epoch,
      clips reused as needed, the same pairs in every epoch.

    A manifest's lines are the pairs (no pairing); lines without ``split`` are split by
    ``split`` and ``seed``, and a manifest without val lines gets val carved from train.

    Corruption (``Corruption``), deterministic per pair and the same for every split:
    ``image_noise`` (pixel noise std, [0, 1] scale), ``image_occlusion`` (share of the image
    under a random block), ``audio_snr_db`` (``audio_noise`` white or pink noise at that SNR).

    Preprocessing: images converted to ``channels`` and resized to ``image_size`` (defaults:
    the training images' own), normalized with the training split's mean/std (of the
    corrupted images, as the model sees them); audio resampled to ``sample_rate``, cut at
    ``max_seconds``, log-mel (``n_mels``, ``n_fft``, ``hop_length``) normalized per bin with the
    training split's statistics. ``image_augment`` and ``audio_augment`` run on training
    batches only. Targets: ``label`` (the digit) and ``speaker`` (the clip's speaker; embedded:
    the synthetic voice ``synth0``..``synth5``; manifest lines without one: ``unknown``).

    ``label_fraction`` (e.g. 0.1) trains on that share of the training pairs only (seeded,
    stratified by label; val and test unchanged): a linear probe or a model from scratch with
    few labels.

    ``drop_at_test`` (e.g. ``["audio"]``) removes those modalities' keys from validation, test
    and predict batches: a model then sees them as missing. Missingness in training is the
    model's business (``longmm.fusion.ModalityDropout`` in ``Classify``): images have no
    per-sample mask in the batch layout, so the data module does not blank samples.
    """

    def __init__(
        self,
        root: str | None = None,
        format: AVFormat = "auto",
        mnist_root: str | None = None,
        fsdd_root: str | None = None,
        image_noise: float = 0.0,
        image_occlusion: float = 0.0,
        audio_snr_db: float | None = None,
        audio_noise: NoiseColour = "white",
        drop_at_test: list[str] | None = None,
        test_takes: list[int] | None = None,
        val_takes: list[int] | None = None,
        image_size: int | None = None,
        channels: int | None = None,
        sample_rate: int = 8000,
        max_seconds: float = 1.0,
        n_mels: int = 40,
        n_fft: int = 256,
        hop_length: int = 80,
        image_augment: ImageAugment | None = None,
        audio_augment: AudioAugment | None = None,
        split: tuple[float, float, float] = (0.7, 0.1, 0.2),
        label_fraction: float = 1.0,
        **common: Any,
    ) -> None:
        super().__init__(root=root, format=format, split=split, **common)
        if format not in ("auto", "embedded", "mnist-fsdd", "manifest"):
            raise DataError(
                "data.format", f"'auto', 'embedded', 'mnist-fsdd' or 'manifest', got {format!r}"
            )
        if max_seconds <= 0:
            raise DataError("data.max_seconds", f"must be > 0, got {max_seconds}")
        if not 0.0 < label_fraction <= 1.0:
            raise DataError("data.label_fraction", f"must be in (0, 1], got {label_fraction}")
        self.label_fraction = label_fraction
        self.drop_at_test = list(drop_at_test or [])
        unknown = sorted(set(self.drop_at_test) - set(AV_MODALITIES))
        if unknown:
            raise DataError("data.drop_at_test", f"unknown modalities {unknown} (image, audio)")
        if set(self.drop_at_test) == set(AV_MODALITIES):
            raise DataError("data.drop_at_test", "cannot drop every modality")
        self.mnist_root = mnist_root
        self.fsdd_root = fsdd_root
        self.corruption = Corruption(
            self.seed, image_noise, image_occlusion, audio_snr_db, audio_noise
        )
        self.image_noise = image_noise
        self.image_occlusion = image_occlusion
        self.audio_snr_db = audio_snr_db
        self.audio_noise = audio_noise
        self.test_takes = list(test_takes) if test_takes is not None else [0, 1, 2, 3, 4]
        self.val_takes = list(val_takes) if val_takes is not None else [5, 6, 7, 8, 9]
        self.image_size = image_size
        self.channels = channels
        self.sample_rate = sample_rate
        self.max_seconds = max_seconds
        self.n_mels = n_mels
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.image_augment = image_augment
        self.audio_augment = audio_augment
        self.logmel = LogMel(sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels)
        self.image_normalizer: ImageNormalizer | None = None
        self.audio_normalizer: FeatureNormalizer | None = None

    # -- reading -----------------------------------------------------------------------------
    @property
    def resolved_format(self) -> str:
        if self.format != "auto":
            return self.format
        if self.root is None:
            return "embedded"
        return "manifest" if Path(self.root).is_file() else "mnist-fsdd"

    def source_name(self) -> str:
        fmt = self.resolved_format
        return "embedded audio-visual digits" if fmt == "embedded" else f"{fmt} at {self.root}"

    def read_source(self) -> SourceData:
        data = self._read_format()
        if self.label_fraction == 1.0:
            return data
        kept = labelled_subset(data.splits["train"], self.label_fraction, self.seed)
        return replace(
            data,
            splits={**data.splits, "train": kept},
            description=f"{data.description}; training on {len(kept)} of "
            f"{len(data.splits['train'])} train pairs (label_fraction {self.label_fraction})",
        )

    def _read_format(self) -> SourceData:
        fmt = self.resolved_format
        if fmt == "embedded":
            return self._read_embedded()
        if fmt == "mnist-fsdd":
            return self._read_real()
        if self.root is None:
            raise DataError("data.root", "a manifest path is required for format 'manifest'")
        data = read_manifest(self.root, skip_bad=self.skip_bad)
        return map_samples(data, self._checked_pair, self.skip_bad)

    def _read_embedded(self) -> SourceData:
        images = self._split(BUILTINS["digits"].read())
        spoken = BUILTINS["spoken-digits"].read().splits["all"]
        parts = seeded_split(len(spoken), self.split, self.seed)
        clips = {name: [spoken[i] for i in idx] for name, idx in zip(SPLITS, parts, strict=True)}
        return self._paired(
            images,
            clips,
            "embedded: scikit-learn digits (real 8x8 scans) + "
            "spoken-digits (SYNTHETIC audio, longmm's own synthesizer)",
        )

    def _read_real(self) -> SourceData:
        mnist = self.mnist_root or (str(Path(self.root) / "mnist") if self.root else None)
        fsdd = self.fsdd_root or (
            str(Path(self.root) / "fsdd" / "recordings") if self.root else None
        )
        if mnist is None or fsdd is None:
            raise DataError("data.root", "the real set needs root (or mnist_root and fsdd_root)")
        for name, path in (("mnist_root", mnist), ("fsdd_root", fsdd)):
            if not Path(path).is_dir():
                raise DataError(f"data.{name}", f"{path} is not a folder")
        images = self._split(read_mnist(mnist, skip_bad=self.skip_bad))
        recordings = read_audio_folder(fsdd, skip_bad=self.skip_bad)
        clips = split_by_takes(recordings.splits["all"], self.test_takes, self.val_takes, fsdd)
        return self._paired(
            images,
            clips,
            f"MNIST ({mnist}) paired by digit with FSDD ({fsdd}); FSDD takes "
            f"{self.test_takes} test, {self.val_takes} val, the rest train",
            skipped=recordings.skipped,
        )

    def _paired(
        self,
        images: dict[str, list[Sample]],
        clips: dict[str, list[Sample]],
        description: str,
        skipped: list | None = None,
    ) -> SourceData:
        splits = {}
        for name in SPLITS:
            if not images.get(name) or not clips.get(name):
                raise DataError(
                    self.source_name(),
                    f"split {name!r} has {len(images.get(name, []))} images and "
                    f"{len(clips.get(name, []))} clips; both are needed",
                )
            splits[name] = pair_by_label(images[name], clips[name], name, self.seed)
        counts = ", ".join(
            f"{n} {len(splits[n])} pairs ({len(images[n])} images, {len(clips[n])} clips)"
            for n in SPLITS
        )
        return SourceData(
            splits=splits,
            classes=sorted_classes({str(s.label) for s in images["train"]}),
            skipped=list(skipped or []),
            description=f"{description}: {counts}",
        )

    @staticmethod
    def _checked_pair(sample: Sample) -> Sample:
        for modality in AV_MODALITIES:
            if modality not in sample.inputs:
                raise DataError(
                    f"{sample.where}: field '{modality}'",
                    "missing (an audio-visual pair needs both 'image' and 'audio')",
                )
        speaker = str(sample.targets.get("speaker", UNKNOWN_SPEAKER))
        return replace(sample, targets={**sample.targets, "speaker": speaker})

    # -- speakers ----------------------------------------------------------------------------
    @property
    def speakers(self) -> list[str]:
        """Speaker names; the ``speaker`` batch key indexes this list."""
        return sorted_classes(
            {str(s.targets["speaker"]) for items in self.samples.values() for s in items}
        )

    @property
    def num_speakers(self) -> int:
        return len(self.speakers)

    # -- datasets ----------------------------------------------------------------------------
    def build_datasets(self, samples: dict[str, list[Sample]]) -> dict[str, Dataset]:
        train = samples["train"]
        first = train[0].inputs[IMAGE]
        self.channels = self.channels or (1 if first.ndim == 2 else int(first.shape[2]))
        self.image_size = self.image_size or int(max(first.shape[:2]))
        speaker_index = {name: i for i, name in enumerate(self.speakers)}
        out: dict[str, Dataset] = {}
        for name, items in samples.items():
            out[name] = self._dataset(name, items, speaker_index)
        if self.image_normalizer is None:  # a restored checkpoint brings its own statistics
            self.image_normalizer = ImageNormalizer(self.channels).fit(out["train"].images)
        if self.audio_normalizer is None:
            self.audio_normalizer = FeatureNormalizer(self.n_mels).fit(self._features(out["train"]))
        return out

    def _dataset(
        self, split: str, items: list[Sample], speaker_index: dict[str, int]
    ) -> AVPairDataset:
        images = torch.stack(
            [
                self.corruption.image(
                    to_chw_uint8(
                        s.inputs[IMAGE], channels=self.channels, size=self.image_size, where=s.where
                    ),
                    split,
                    i,
                )
                for i, s in enumerate(items)
            ]
        )  # (N, C, H, W) uint8
        # A clip paired with several images is resampled and stored once.
        clip_ids: dict[int, int] = {}
        waves: list[Tensor] = []
        clip_of = []
        for s in items:
            wave: Waveform = s.inputs[AUDIO]
            if id(wave) not in clip_ids:
                clip_ids[id(wave)] = len(waves)
                waves.append(self._waveform(wave, s.where))
            clip_of.append(clip_ids[id(wave)])
        clips = RaggedDataset.from_items(AUDIO, waves, torch.zeros(len(waves), dtype=torch.long))
        labels = torch.tensor([self.label_index(s) for s in items], dtype=torch.long)
        speakers = torch.tensor([speaker_index[s.targets["speaker"]] for s in items])
        return AVPairDataset(
            split, images, clips, torch.tensor(clip_of), labels, speakers, self.corruption
        )

    def _waveform(self, wave: Waveform, where: str) -> Tensor:
        samples = resample(wave.samples, wave.sample_rate, self.sample_rate)
        samples = samples[: max(1, math.floor(self.max_seconds * self.sample_rate))]
        if len(samples) == 0:
            raise DataError(where, "field 'audio': no samples")
        return torch.as_tensor(np.asarray(samples, dtype=np.float32))

    def _features(self, ds: AVPairDataset) -> Iterator[tuple[Tensor, Tensor]]:
        """Log-mel features of the (noisy) training pairs, in chunks."""
        for start in range(0, len(ds), _STATS_CHUNK):
            waves = [ds.waveform(i) for i in range(start, min(start + _STATS_CHUNK, len(ds)))]
            yield self.logmel(*pad_waveforms(waves))

    def collate_fn(self) -> Collate:
        return collate_pairs

    # -- batches on the device -----------------------------------------------------------------
    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        return self.transform(batch, training=self.is_training())

    def transform(self, batch: Batch, training: bool) -> Batch:
        """Raw collated batch -> model batch: normalize, augment (training), drop modalities
        (not training)."""
        if self.image_normalizer is None or self.audio_normalizer is None:
            raise RuntimeError("call setup() first")
        if IMAGE in batch and batch[IMAGE].dtype == torch.uint8:
            image = self.image_normalizer.to(batch[IMAGE].device)(batch[IMAGE])
            if self.image_augment is not None:
                self.image_augment.train(training)
                image = self.image_augment(image)
            batch[IMAGE] = image
        lengths = batch.pop(f"{AUDIO}_lengths", None)
        if lengths is not None and AUDIO in batch:
            wave = batch[AUDIO]  # (B, T)
            self.logmel.to(wave.device)
            self.audio_normalizer.to(wave.device)
            if self.audio_augment is not None:
                self.audio_augment.train(training)
                wave = self.audio_augment.augment_waveform(wave, lengths)
            feats, mask = self.logmel(wave, lengths)  # (B, n_mels, F), (B, F)
            feats = self.audio_normalizer(feats)
            if self.audio_augment is not None:
                feats = self.audio_augment.augment_features(feats, mask)
            batch[AUDIO] = feats.masked_fill(~mask[:, None, :], 0.0)
            batch[f"{AUDIO}_mask"] = mask
        if not training:
            for modality in self.drop_at_test:
                batch.pop(modality, None)
                batch.pop(f"{modality}_mask", None)
        return batch

    # -- what a run folder keeps -------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out["pairs"] = {
            name: {
                "images": len({s.meta.get("image", s.where) for s in items}),
                "clips": len({s.meta.get("audio", s.where) for s in items}),
            }
            for name, items in self.samples.items()
        }
        out["speakers"] = self.speakers
        return out

    def preprocessing_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "classes": self.classes,
            "speakers": self.speakers,
            "image_size": self.image_size,
            "channels": self.channels,
            "sample_rate": self.sample_rate,
            "max_seconds": self.max_seconds,
            "n_mels": self.n_mels,
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "corruption": {
                "seed": self.seed,
                "image_noise": self.image_noise,
                "image_occlusion": self.image_occlusion,
                "audio_snr_db": self.audio_snr_db,
                "audio_noise": self.audio_noise,
            },
            "drop_at_test": self.drop_at_test,
        }
        if self.image_normalizer is not None:
            state["mean"] = self.image_normalizer.mean.tolist()
            state["std"] = self.image_normalizer.std.tolist()
        if self.audio_normalizer is not None:
            state["feature_mean"] = self.audio_normalizer.mean.tolist()
            state["feature_std"] = self.audio_normalizer.std.tolist()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        prep = json.loads(state.get("preprocessing", "{}"))
        if "mean" in prep:
            self.image_normalizer = ImageNormalizer(len(prep["mean"]))
            self.image_normalizer.mean.copy_(torch.tensor(prep["mean"]))
            self.image_normalizer.std.copy_(torch.tensor(prep["std"]))
        if "feature_mean" in prep:
            if len(prep["feature_mean"]) != self.n_mels:
                raise DataError(
                    "checkpoint data state",
                    f"{len(prep['feature_mean'])} mel bins saved, but n_mels={self.n_mels}",
                )
            self.audio_normalizer = FeatureNormalizer(self.n_mels)
            self.audio_normalizer.mean.copy_(torch.tensor(prep["feature_mean"]))
            self.audio_normalizer.std.copy_(torch.tensor(prep["feature_std"]))

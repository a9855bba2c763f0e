"""A trained classifier run folder, ready to answer one input at a time or a batch.

``load_served_run`` reads what ``longmm fit`` wrote: ``checkpoints/best.ckpt`` (read with
``weights_only=True``; the checkpoint carries the recipe, so the model rebuilds itself),
``data.json``'s ``preprocessing`` (image size, channels and statistics; audio rate, length
and log-mel statistics; text cleaning and ``max_length``) and ``tokenizer.json``. A run whose
``data.json`` or ``tokenizer.json`` is missing falls back on the copies in the checkpoint's
data-module state.

``Preprocessor`` splits preparation in two, as a server needs it: :meth:`Preprocessor.prepare`
turns one request's raw inputs (a string, encoded image bytes, encoded audio bytes) into
compact arrays and checks them against :class:`Limits` (cheap, per request, where the request
arrives); :meth:`Preprocessor.collate` turns a list of prepared items into the batch the
model reads (padding, normalization, log-mel; vectorized, where the batch is run).
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from longmm.data.audio import LogMel, lengths_to_mask, pad_waveforms, resample
from longmm.data.image import ImageNormalizer, to_chw_uint8
from longmm.data.schema import AUDIO, IMAGE, TEXT
from longmm.data.text import TextTokenizer, clean_text
from longmm.errors import DataError, LongmmError
from longmm.runs import read_best_checkpoint

SERVED_MODALITIES = (TEXT, IMAGE, AUDIO)


@dataclass(frozen=True)
class Limits:
    """What one request may hold. Anything over a limit is refused, never cut silently
    (audio longer than the model's own window is still cut to it, as in training)."""

    max_request_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 4096 * 4096
    max_audio_seconds: float = 60.0
    max_text_tokens: int = 16_384
    max_document_tokens: int = 2_000_000


class InputError(LongmmError):
    """One field of a request is wrong: ``field`` names it, ``status`` is the HTTP code."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        self.field = field
        self.message = message
        self.status = status
        super().__init__(f"{field}: {message}")


def _listing(names: Sequence[str]) -> str:
    """``["image"]`` -> ``image``; ``["image", "audio", "text"]`` -> ``image, audio and text``."""
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


_OBJECT_REPR = re.compile(r"\s*<[^<>]* object at 0x[0-9a-fA-F]+>")


def _reason(err: BaseException) -> str:
    """A decoder's error message for a client, without Python object reprs in it."""
    text = getattr(err, "error_string", None) or str(err)  # libsndfile's own words
    text = _OBJECT_REPR.sub("", text).strip()
    return text or type(err).__name__


@dataclass
class Preprocessor:
    """Inputs as training prepared them, for the modalities ``modalities`` of one run."""

    modalities: list[str]
    state: dict[str, Any]
    tokenizer: TextTokenizer | None = None
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        s = self.state
        if TEXT in self.modalities and self.tokenizer is None:
            raise LongmmError("the run reads text but has no tokenizer (tokenizer.json)")
        if IMAGE in self.modalities:
            for key in ("image_size", "channels", "mean", "std"):
                if s.get(key) is None:
                    raise LongmmError(f"data.json preprocessing: {key!r} missing for images")
            self.image_normalizer = ImageNormalizer(int(s["channels"]))
            self.image_normalizer.mean.copy_(torch.tensor(s["mean"]))
            self.image_normalizer.std.copy_(torch.tensor(s["std"]))
        if AUDIO in self.modalities:
            keys = ("sample_rate", "max_seconds", "n_mels", "n_fft", "hop_length")
            for key in (*keys, "feature_mean", "feature_std"):
                if s.get(key) is None:
                    raise LongmmError(f"data.json preprocessing: {key!r} missing for audio")
            self.logmel = LogMel(
                int(s["sample_rate"]),
                n_fft=int(s["n_fft"]),
                hop_length=int(s["hop_length"]),
                n_mels=int(s["n_mels"]),
            )
            self.feature_mean = torch.tensor(s["feature_mean"], dtype=torch.float32)
            self.feature_std = torch.tensor(s["feature_std"], dtype=torch.float32)

    # -- one request ---------------------------------------------------------------------------
    def prepare(self, raw: dict[str, Any]) -> dict[str, np.ndarray]:
        """``{modality: str | bytes}`` -> ``{modality: array}``; an ``InputError`` names the
        field that is missing, unknown, over a limit or undecodable."""
        unknown = sorted(set(raw) - set(self.modalities))
        if unknown:
            raise InputError(
                unknown[0],
                f"this model reads {_listing(self.modalities)} input, not {unknown[0]}",
            )
        if not raw:
            raise InputError(
                "inputs", f"give at least one of {', '.join(self.modalities)} for this model"
            )
        out: dict[str, np.ndarray] = {}
        for modality, value in raw.items():
            prepare = getattr(self, f"_prepare_{modality}")
            out[modality] = prepare(value)
        return out

    def _prepare_text(self, text: Any) -> np.ndarray:
        if not isinstance(text, str):
            raise InputError(TEXT, f"must be a string, got {type(text).__name__}")
        s = self.state
        cleaned = clean_text(
            text, lowercase=bool(s.get("lowercase")), redact_pii=bool(s.get("redact_pii"))
        )
        if not cleaned:
            raise InputError(TEXT, "is empty (nothing left after cleaning)")
        assert self.tokenizer is not None
        ids = self.tokenizer.encode(cleaned)  # untruncated: the limit counts every token
        if len(ids) > self.limits.max_text_tokens:
            raise InputError(
                TEXT,
                f"{len(ids)} tokens, over the limit of {self.limits.max_text_tokens}",
                status=413,
            )
        ids = self.tokenizer.encode(cleaned, int(s.get("max_length") or 512))
        if not ids:
            raise InputError(TEXT, "the tokenizer gives no tokens")
        return np.asarray(ids, dtype=np.int64)

    def _prepare_image(self, data: Any) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        if not isinstance(data, bytes | bytearray) or not data:
            raise InputError(IMAGE, "must be a non-empty encoded image (PNG, JPEG, ...)")
        try:
            with Image.open(io.BytesIO(data)) as image:
                w, h = image.size
                if w * h > self.limits.max_image_pixels:
                    raise InputError(
                        IMAGE,
                        f"{w}x{h} = {w * h} pixels, over the limit of "
                        f"{self.limits.max_image_pixels}",
                        status=413,
                    )
                if w < 1 or h < 1:
                    raise InputError(IMAGE, f"has no pixels ({w}x{h})")
                image.load()
                mode = "L" if int(self.state["channels"]) == 1 else "RGB"
                array = np.asarray(image.convert(mode))
        except InputError:
            raise
        except UnidentifiedImageError as err:
            raise InputError(
                IMAGE, "not a readable image (PIL cannot identify its format)"
            ) from err
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise InputError(IMAGE, f"not a readable image ({_reason(err)})") from err
        chw = to_chw_uint8(
            array,
            channels=int(self.state["channels"]),
            size=int(self.state["image_size"]),
            where=IMAGE,
        )
        return chw.numpy()  # (C, H, W) uint8

    def _prepare_audio(self, data: Any) -> np.ndarray:
        import soundfile as sf

        if not isinstance(data, bytes | bytearray) or not data:
            raise InputError(AUDIO, "must be a non-empty encoded audio file (WAV, FLAC, OGG)")
        try:
            info = sf.info(io.BytesIO(data))
        except (sf.LibsndfileError, RuntimeError, TypeError) as err:
            raise InputError(AUDIO, f"not a readable audio file ({_reason(err)})") from err
        if info.samplerate <= 0 or info.frames <= 0:
            raise InputError(AUDIO, "holds no samples")
        seconds = info.frames / info.samplerate
        if seconds > self.limits.max_audio_seconds:
            raise InputError(
                AUDIO,
                f"{seconds:.1f} s long, over the limit of {self.limits.max_audio_seconds:g} s",
                status=413,
            )
        try:
            samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as err:
            raise InputError(AUDIO, f"not a readable audio file ({_reason(err)})") from err
        if not np.isfinite(samples).all():
            raise InputError(AUDIO, "holds NaN or infinite samples")
        mono = samples.mean(axis=1)
        target = int(self.state["sample_rate"])
        mono = resample(mono, rate, target).astype(np.float32, copy=False)
        keep = max(1, math.floor(float(self.state["max_seconds"]) * target))
        return np.ascontiguousarray(mono[:keep])

    # -- a batch -------------------------------------------------------------------------------
    def collate(self, items: Sequence[dict[str, np.ndarray]]) -> dict[str, Tensor]:
        """Prepared items that hold the same modalities -> the model's batch."""
        batch: dict[str, Tensor] = {}
        present = items[0].keys()
        if TEXT in present:
            rows = [torch.from_numpy(it[TEXT]) for it in items]
            assert self.tokenizer is not None
            ids = pad_sequence(rows, batch_first=True, padding_value=self.tokenizer.pad_id)
            lengths = torch.tensor([len(r) for r in rows])
            batch[TEXT] = ids  # (B, L)
            batch[f"{TEXT}_mask"] = lengths_to_mask(lengths, ids.shape[1])
        if IMAGE in present:
            images = torch.from_numpy(np.stack([it[IMAGE] for it in items]))  # (B, C, H, W)
            batch[IMAGE] = self.image_normalizer(images)
        if AUDIO in present:
            wave, lengths = pad_waveforms([it[AUDIO] for it in items])  # (B, T)
            feats, mask = self.logmel(wave, lengths)  # (B, n_mels, F), (B, F)
            feats = (feats - self.feature_mean[None, :, None]) / self.feature_std[None, :, None]
            batch[AUDIO] = feats.masked_fill(~mask[:, None, :], 0.0)
            batch[f"{AUDIO}_mask"] = mask
        return batch


@dataclass
class ServedRun:
    """A classifier run folder: its model (eval mode), preprocessing and class names."""

    name: str
    path: Path
    model: Any  # longmm.tasks.Classify
    prep: Preprocessor
    classes: list[str]
    test_metrics: dict[str, Any] = field(default_factory=dict)
    task: str = "Classify"
    fusion: str | None = None  # the fusion module's class name

    @property
    def modalities(self) -> list[str]:
        return list(self.prep.modalities)

    def describe(self) -> dict[str, Any]:
        """What a client needs to know to call the model."""
        return {
            "name": self.name,
            "task": self.task,
            "modalities": self.modalities,
            "classes": self.classes,
            "fusion": self.fusion,
            "test_accuracy": self.test_metrics.get("accuracy"),
        }

    @torch.inference_mode()
    def predict(self, items: Sequence[dict[str, np.ndarray]], top_k: int = 5) -> list[dict]:
        """Predictions for prepared ``items`` (any mix of modalities), in their order."""
        results: list[dict] = [{} for _ in items]
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(tuple(sorted(item)), []).append(i)
        device = next(self.model.parameters()).device
        for indices in groups.values():
            batch = self.prep.collate([items[i] for i in indices])
            batch = {k: v.to(device) for k, v in batch.items()}
            logits, fused = self.model.classify(batch)
            probs = torch.softmax(logits.float(), dim=-1).cpu()  # (B, num_classes)
            weights = (
                {m: w.float().cpu() for m, w in fused.weights.items()}
                if fused is not None and fused.weights is not None
                else None
            )
            k = min(top_k, probs.shape[1])
            top_p, top_i = probs.topk(k, dim=-1)
            for row, i in enumerate(indices):
                best = int(top_i[row, 0])
                out: dict[str, Any] = {
                    "model": self.name,
                    "label": self._name(best),
                    "confidence": round(float(top_p[row, 0]), 6),
                    "top": [
                        {"label": self._name(int(c)), "prob": round(float(p), 6)}
                        for p, c in zip(top_p[row], top_i[row], strict=True)
                    ],
                    "modalities": sorted(items[i]),
                }
                if weights is not None:
                    out["weights"] = {m: round(float(w[row]), 6) for m, w in weights.items()}
                results[i] = out
        return results

    def _name(self, index: int) -> str:
        return self.classes[index] if index < len(self.classes) else str(index)


def _checkpoint_data_state(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The data module's saved state (``{"preprocessing": json, "tokenizer": json, ...}``)."""
    for value in ckpt.values():
        if isinstance(value, dict) and isinstance(value.get("preprocessing"), str):
            return value
    return {}


def load_served_run(
    run_dir: str | Path,
    limits: Limits | None = None,
    device: str | torch.device = "cpu",
    name: str | None = None,
) -> ServedRun:
    """The classifier of ``run_dir`` (best checkpoint, eval mode, on ``device``)."""
    from longmm.tasks.classify import Classify

    run = Path(run_dir)
    ckpt_path, ckpt = read_best_checkpoint(run, "Classify")  # serving answers classifiers
    try:
        model = Classify.load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=True)
    except (RuntimeError, TypeError, KeyError, ValueError) as err:
        raise LongmmError(f"{ckpt_path}: cannot rebuild the classifier ({err})") from err
    model.eval().to(device)
    data_state = _checkpoint_data_state(ckpt)
    data_file = run / "data.json"
    if data_file.is_file():
        try:
            summary = json.loads(data_file.read_text())
        except json.JSONDecodeError as err:
            raise DataError(str(data_file), f"not valid JSON ({err})") from err
        state = dict(summary.get("preprocessing") or {})
    else:
        state = json.loads(data_state.get("preprocessing", "{}"))
    if not state:
        raise LongmmError(f"{run}: no preprocessing state (data.json, or in the checkpoint)")
    modalities = [m for m in model.encoders if m in SERVED_MODALITIES]
    others = [m for m in model.encoders if m not in SERVED_MODALITIES]
    if others:
        raise LongmmError(f"{run}: cannot serve modalities {others} (only {SERVED_MODALITIES})")
    tokenizer = None
    if TEXT in modalities:
        tok_file = run / "tokenizer.json"
        if tok_file.is_file():
            tokenizer = TextTokenizer.load(tok_file)
        elif "tokenizer" in data_state:
            from longmm.data.modules import tokenizer_from_json

            tokenizer = tokenizer_from_json(data_state["tokenizer"], where=str(ckpt_path))
        else:
            raise LongmmError(f"{tok_file}: tokenizer not found, and the checkpoint has none")
    prep = Preprocessor(modalities, state, tokenizer, limits or Limits())
    metrics: dict[str, Any] = {}
    if (run / "metrics.json").is_file():
        metrics = json.loads((run / "metrics.json").read_text()).get("test", {})
    classes = [str(c) for c in state.get("classes") or []]
    fusion = getattr(model, "fusion", None)
    return ServedRun(
        name or run.resolve().name,
        run,
        model,
        prep,
        classes,
        metrics,
        task=type(model).__name__,
        fusion=type(fusion).__name__ if fusion is not None else None,
    )

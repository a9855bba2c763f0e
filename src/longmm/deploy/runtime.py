"""Run an export of ``longmm export`` with ONNX Runtime and numpy only: no torch.

    python -m longmm.deploy.runtime EXPORT_DIR digit.png other.png
    python -m longmm.deploy.runtime EXPORT_DIR --text "a gripping, funny film" --text "dull"
    python -m longmm.deploy.runtime EXPORT_DIR --manifest pairs.jsonl --out predictions.jsonl
    longmm predict --engine onnx EXPORT_DIR ...   (the same, through the longmm command)

Preprocessing repeats training's from ``export.json``: images decoded with Pillow, converted,
resized (bilinear) and normalized with the training statistics; text cleaned
(``longmm.text_cleaning``) and tokenized with the run's ``tokenizer.json`` (Hugging Face
``tokenizers``); audio decoded with soundfile, resampled with soxr, and turned into
normalized log-mel features by a numpy STFT and the exported mel filterbank. Each of those
libraries is imported only when its modality is used; this module imports neither torch nor
anything of longmm that does.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from longmm.errors import DataError, LongmmError
from longmm.io import atomic_write_text

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
TEXT_EXTENSIONS = (".txt",)


class OnnxClassifier:
    """A loaded export: ``predict`` takes samples (dicts by modality: an image path or
    ``uint8 (H, W[, C])`` array, a text string, an audio path or ``(samples, rate)``) and
    returns one dict per sample: ``pred`` (class name), ``prob`` and ``probs`` by class.

    A sample may leave out a modality that has a ``<m>_mask`` input (audio, text): the model
    then sees it as absent for that sample (an all-False mask row), as the server does."""

    def __init__(self, export_dir: str | Path, model: str | None = None, threads: int = 1) -> None:
        self.root = Path(export_dir)
        manifest_path = self.root / "export.json"
        if not manifest_path.is_file():
            raise LongmmError(f"{manifest_path}: not found (give a folder of `longmm export`)")
        try:
            self.manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as err:
            raise LongmmError(f"{manifest_path}: not valid JSON ({err})") from err
        models = self.manifest["models"]
        self.model_kind = model or ("int8" if "int8" in models else "fp32")
        if self.model_kind not in models:
            raise LongmmError(
                f"{self.root}: no {self.model_kind} model in this export (has {sorted(models)})"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            str(self.root / models[self.model_kind]), options, providers=["CPUExecutionProvider"]
        )
        self.classes: list[str] = list(self.manifest["classes"])
        self.modalities: dict[str, dict[str, Any]] = self.manifest["modalities"]
        self.inputs = [i.name for i in self.session.get_inputs()]
        self._graph_inputs = {i.name: i for i in self.session.get_inputs()}
        #: Modalities a sample may leave out: those with a ``<m>_mask`` input, where an
        #: all-False mask row marks the modality absent for that sample (as the server does
        #: by leaving the key out). A modality without a mask input (image) is always needed.
        self.optional = [m for m in self.modalities if f"{m}_mask" in self._graph_inputs]
        self._tokenizer: Any = None
        self._mel: np.ndarray | None = None

    # -- preprocessing ------------------------------------------------------------------------
    def check(self, sample: dict[str, Any], where: str) -> None:
        """A clear error unless ``sample`` holds every modality the model cannot do without
        and at least one modality; a missing field is one left out or None."""
        given = [m for m in self.modalities if sample.get(m) is not None]
        needed = [m for m in self.modalities if m not in self.optional and m not in given]
        others = sorted(k for k in sample if k not in self.modalities and k != "where")
        hint = f"; this model reads {sorted(self.modalities)}, not {others}" if others else ""
        if needed:
            m = needed[0]
            raise DataError(
                where, f"field {m!r}: missing (this model cannot read a sample without it{hint})"
            )
        if not given:
            raise _none_given(where, list(self.modalities), hint)

    def prepare(self, samples: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
        """The model's input arrays for ``samples`` (one batch). A sample may leave out a
        modality with a mask input: it gets zero features (pad ids for text) and an all-False
        mask row, which the model reads as that modality being absent for that sample."""
        if not samples:
            raise DataError("inputs", "no samples to predict")
        wheres = [str(s.get("where", f"sample {i}")) for i, s in enumerate(samples)]
        for sample, where in zip(samples, wheres, strict=True):
            self.check(sample, where)
        arrays: dict[str, np.ndarray] = {}
        for modality in self.modalities:
            rows = [i for i, s in enumerate(samples) if s.get(modality) is not None]
            values = [samples[i][modality] for i in rows]
            where_rows = [wheres[i] for i in rows]
            if modality == "image":
                arrays["image"] = np.stack(
                    [self._image(v, w) for v, w in zip(values, where_rows, strict=True)]
                )
                continue
            if modality == "text":
                x, mask = self._texts(values, where_rows) if rows else (None, None)
                fill = int(self.modalities["text"]["pad_id"])
            elif modality == "audio":
                x, mask = self._audio(values, where_rows) if rows else (None, None)
                fill = 0
            else:
                raise LongmmError(f"export.json: unknown modality {modality!r}")
            arrays[modality], arrays[f"{modality}_mask"] = self._with_absent(
                modality, x, mask, rows, len(samples), fill
            )
        return {name: arrays[name] for name in self.inputs}

    def _with_absent(
        self,
        modality: str,
        x: np.ndarray | None,
        mask: np.ndarray | None,
        rows: list[int],
        batch: int,
        fill: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``x`` and ``mask`` of the samples ``rows`` placed in a batch of ``batch``: the other
        rows filled with ``fill`` and a False mask; sequence length 1 when no sample has it."""
        if len(rows) == batch:
            return x, mask  # type: ignore[return-value]
        mask_name = f"{modality}_mask"
        if modality not in self._graph_inputs or mask_name not in self._graph_inputs:
            raise LongmmError(f"{self.root}: the model has no {mask_name} input")
        length = 1 if mask is None else mask.shape[1]
        full_x = np.full(
            self._graph_shape(modality, batch, length),
            fill,
            dtype=_numpy_dtype(self._graph_inputs[modality].type),
        )
        full_mask = np.zeros(
            self._graph_shape(mask_name, batch, length),
            dtype=_numpy_dtype(self._graph_inputs[mask_name].type),
        )
        if rows:
            full_x[rows] = x
            full_mask[rows] = mask
        return full_x, full_mask

    def _graph_shape(self, name: str, batch: int, length: int) -> tuple[int, ...]:
        """The shape the graph expects for input ``name``: axis 0 the batch, any other
        dynamic axis the sequence ``length``, fixed axes as exported."""
        shape = self._graph_inputs[name].shape
        return tuple(
            batch if i == 0 else (int(d) if isinstance(d, int) else length)
            for i, d in enumerate(shape)
        )

    def _image(self, value: Any, where: str) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        spec = self.modalities["image"]
        channels, size = int(spec["channels"]), spec.get("image_size")
        mode = "L" if channels == 1 else "RGB"
        try:
            if isinstance(value, np.ndarray):
                if value.dtype != np.uint8 or value.ndim not in (2, 3):
                    raise DataError(
                        where,
                        f"image array must be uint8 (H, W[, C]), got {value.dtype} {value.shape}",
                    )
                image = Image.fromarray(
                    value[..., 0] if value.ndim == 3 and value.shape[2] == 1 else value
                )
            else:
                image = Image.open(str(value))
            image = image.convert(mode)
        except (OSError, UnidentifiedImageError) as err:
            raise DataError(where, f"not a readable image ({err})") from err
        if size is not None and image.size != (size, size):
            image = image.resize((int(size), int(size)), Image.Resampling.BILINEAR)
        x = np.asarray(image, dtype=np.float32) / 255.0
        x = x[:, :, None] if x.ndim == 2 else x  # (H, W, C)
        mean = np.asarray(spec["mean"], dtype=np.float32)
        std = np.asarray(spec["std"], dtype=np.float32)
        return ((x - mean) / std).transpose(2, 0, 1).astype(np.float32)  # (C, H, W)

    def _texts(self, values: list[Any], wheres: list[str]) -> tuple[np.ndarray, np.ndarray]:
        from longmm.text_cleaning import clean_text

        spec = self.modalities["text"]
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_file(str(self.root / spec["tokenizer"]))
            self._tokenizer.no_padding()
            self._tokenizer.no_truncation()
        rows = []
        for value, where in zip(values, wheres, strict=True):
            if not isinstance(value, str):
                raise DataError(
                    where, f"field 'text': expected a string, got {type(value).__name__}"
                )
            text = clean_text(value, lowercase=spec["lowercase"], redact_pii=spec["redact_pii"])
            ids = self._token_ids(text, spec)
            if not ids:
                raise DataError(where, f"field 'text': no tokens in {value!r}")
            rows.append(ids)
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), spec["pad_id"], dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=bool)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = True
        return ids, mask

    def _token_ids(self, text: str, spec: dict[str, Any]) -> list[int]:
        """As ``TextTokenizer.encode``: the model's special tokens inside ``max_length``."""
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        added, max_length = int(spec["special_tokens_added"]), int(spec["max_length"])
        if not added:
            return list(encoding.ids[:max_length])
        encoding.truncate(max_length - added)
        return list(self._tokenizer.post_process(encoding, None, add_special_tokens=True).ids)

    def _audio(self, values: list[Any], wheres: list[str]) -> tuple[np.ndarray, np.ndarray]:
        spec = self.modalities["audio"]
        rate = int(spec["sample_rate"])
        limit = max(1, math.floor(float(spec["max_seconds"]) * rate))
        waves = [self._waveform(v, w, rate)[:limit] for v, w in zip(values, wheres, strict=True)]
        if self._mel is None:
            self._mel = np.load(self.root / spec["mel_filterbank"]).astype(np.float32)
        return log_mel(waves, spec, self._mel)

    @staticmethod
    def _waveform(value: Any, where: str, rate: int) -> np.ndarray:
        if isinstance(value, tuple):
            samples, source_rate = np.asarray(value[0], dtype=np.float32), int(value[1])
        else:
            import soundfile

            try:
                data, source_rate = soundfile.read(str(value), dtype="float32", always_2d=True)
            except (RuntimeError, OSError, ValueError, TypeError) as err:
                raise DataError(where, f"not readable audio ({err})") from err
            samples = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
        if samples.ndim != 1 or len(samples) == 0:
            raise DataError(where, f"audio must be non-empty mono samples, got {samples.shape}")
        if source_rate != rate:
            import soxr

            samples = soxr.resample(samples, source_rate, rate, quality="HQ")
        return np.ascontiguousarray(samples, dtype=np.float32)

    # -- prediction ---------------------------------------------------------------------------
    def logits(self, samples: Sequence[dict[str, Any]]) -> np.ndarray:
        return self.session.run(None, self.prepare(samples))[0]

    def predict(self, samples: Sequence[dict[str, Any]], batch_size: int = 32) -> list[dict]:
        for i, sample in enumerate(samples):  # every sample's fields before any work
            self.check(sample, str(sample.get("where", f"sample {i}")))
        rows: list[dict[str, Any]] = []
        for start in range(0, len(samples), batch_size):
            chunk = samples[start : start + batch_size]
            probs = softmax(self.logits(chunk))
            for sample, p in zip(chunk, probs, strict=True):
                k = int(p.argmax())
                row: dict[str, Any] = {}
                if "where" in sample:
                    row["input"] = sample["where"]
                row["pred"] = self.classes[k]
                row["prob"] = round(float(p[k]), 6)
                row["probs"] = {c: round(float(v), 6) for c, v in zip(self.classes, p, strict=True)}
                rows.append(row)
        return rows


_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}


def _numpy_dtype(ort_type: str) -> Any:
    if ort_type not in _ORT_DTYPES:
        raise LongmmError(f"model input of type {ort_type}: not supported by this runtime")
    return _ORT_DTYPES[ort_type]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def log_mel(
    waves: list[np.ndarray], spec: dict[str, Any], mel_fb: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``LogMel`` + feature normalization in numpy: ``features (B, n_mels, F)`` (0 on padded
    frames) and ``mask (B, F)``. Centred STFT with zero padding and a periodic Hann window,
    power spectrum, mel filterbank, ``log(x + offset)``."""
    n_fft, hop = int(spec["n_fft"]), int(spec["hop_length"])
    longest = max(len(w) for w in waves)
    batch = np.zeros((len(waves), max(longest, 1)), dtype=np.float32)
    for i, w in enumerate(waves):
        batch[i, : len(w)] = w
    half = n_fft // 2
    padded = np.pad(batch, ((0, 0), (half, half)))
    frames = 1 + (padded.shape[1] - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]  # (F, n_fft)
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    spectrum = np.fft.rfft(padded[:, index] * window, axis=-1)  # (B, F, n_fft // 2 + 1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
    mel = np.einsum("mk,bfk->bmf", mel_fb, power)  # (B, n_mels, F)
    feats = np.log(mel + float(spec["log_offset"]))
    mean = np.asarray(spec["feature_mean"], dtype=np.float32)[None, :, None]
    std = np.asarray(spec["feature_std"], dtype=np.float32)[None, :, None]
    feats = (feats - mean) / std
    real = np.array([1 + len(w) // hop for w in waves])
    mask = np.arange(frames)[None, :] < np.minimum(real, frames)[:, None]  # (B, F)
    return np.where(mask[:, None, :], feats, 0.0).astype(np.float32), mask


# ---- command line ---------------------------------------------------------------------------


def build_parser(prog: str = "python -m longmm.deploy.runtime") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Predict with an export of `longmm export` (ONNX Runtime + numpy; no torch).",
    )
    p.add_argument("export", help="export folder (holds export.json)")
    p.add_argument(
        "inputs",
        nargs="*",
        help="image or audio files, or .txt files (one text per line); for a multimodal model "
        "each file is a sample with only that modality (the others absent, where the model can "
        "do without them)",
    )
    p.add_argument("--text", action="append", default=[], help="a text to classify (repeatable)")
    p.add_argument(
        "--manifest",
        default=None,
        help='JSONL, one sample per line: {"image": path, "audio": path, "text": str} '
        "(paths relative to the manifest); a sample may leave out (or set to null) a modality "
        "the model can do without (one with a mask input: audio, text), not image",
    )
    p.add_argument("--model", choices=["int8", "fp32"], default=None, help="default: int8 if any")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    p.add_argument("--out", default=None, help="JSONL file to write (default: stdout)")
    return p


def read_samples(
    inputs: list[str], texts: list[str], manifest: str | None, modalities: Sequence[str]
) -> list[dict[str, Any]]:
    """Samples from file arguments, ``--text`` values and a manifest."""
    samples: list[dict[str, Any]] = [
        {"text": t, "where": f"--text {i + 1}"} for i, t in enumerate(texts)
    ]
    for name in inputs:
        path = Path(name)
        if not path.is_file():
            raise DataError(name, "input file not found")
        suffix = path.suffix.lower()
        if suffix in TEXT_EXTENSIONS:
            lines = path.read_text(encoding="utf-8").splitlines()
            samples += [
                {"text": line, "where": f"{name}:{n}"}
                for n, line in enumerate(lines, 1)
                if line.strip()
            ]
        elif suffix in IMAGE_EXTENSIONS:
            samples.append({"image": str(path), "where": name})
        elif suffix in AUDIO_EXTENSIONS:
            samples.append({"audio": str(path), "where": name})
        else:
            raise DataError(
                name,
                f"unknown input type {suffix!r} (images {IMAGE_EXTENSIONS}, "
                f"audio {AUDIO_EXTENSIONS}, text {TEXT_EXTENSIONS}; or --manifest)",
            )
    if manifest is not None:
        samples += read_manifest(Path(manifest), modalities)
    if not samples:
        raise DataError("inputs", "nothing to predict: give files, --text or --manifest")
    return samples


def read_manifest(path: Path, modalities: Sequence[str]) -> list[dict[str, Any]]:
    """Samples of a JSONL manifest: the fields of ``modalities`` each line gives (a field left
    out or null is not in the sample; ``OnnxClassifier.check`` says whether the model can do
    without it). A line with none of them is an error."""
    if not path.is_file():
        raise DataError(str(path), "manifest not found")
    samples = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(where, f"not valid JSON ({err.msg})") from err
        if not isinstance(row, dict):
            raise DataError(where, "expected a JSON object")
        sample: dict[str, Any] = {"where": where}
        for modality in modalities:
            value = row.get(modality)
            if value is None:  # left out: the model decides whether it can do without it
                continue
            if modality in ("image", "audio"):
                value = str(path.parent / str(value))
            sample[modality] = value
        if len(sample) == 1:
            raise _none_given(where, list(modalities))
        samples.append(sample)
    return samples


def _none_given(where: str, modalities: Sequence[str], hint: str = "") -> DataError:
    """The error for a sample that gives none of the model's ``modalities``."""
    if len(modalities) == 1:
        return DataError(where, f"field {modalities[0]!r}: missing{hint}")
    fields = ", ".join(repr(m) for m in modalities)
    return DataError(where, f"fields {fields}: all missing (a sample needs at least one{hint})")


def main(args: list[str] | None = None, prog: str = "python -m longmm.deploy.runtime") -> None:
    opts = build_parser(prog).parse_args(sys.argv[1:] if args is None else args)
    try:
        model = OnnxClassifier(opts.export, model=opts.model, threads=opts.threads)
        samples = read_samples(opts.inputs, opts.text, opts.manifest, list(model.modalities))
        rows = model.predict(samples, batch_size=max(1, opts.batch_size))
    except LongmmError as err:
        if prog.startswith("longmm"):
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if opts.out:
        atomic_write_text(opts.out, text)
        print(f"wrote {len(rows)} predictions to {opts.out}")
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()

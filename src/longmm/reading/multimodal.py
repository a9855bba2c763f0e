"""Multimodal documents: figures and audio clips read by trained encoders, answered in place.

A document's figures and clips (``Document.assets``, from multimodal JSONL) stand in its text
as placeholder lines (``[Figure 12: caption]``) at their positions, so retrieval ranks them
with the text around them and citations point at them. When the reader indexes a document,
every asset also goes through the classifier of its modality (a digit CNN trained by
``recipes/cnn_digits.yaml`` for figures, a spoken-digit CNN trained by
``recipes/audio_spoken_digits.yaml`` for clips; any ``longmm fit`` classifier run can be packaged
with :func:`export_asset_model`), and the prediction is stored with the index at the asset's
position.

To answer, :class:`MultimodalReader` retrieves evidence as the retrieval reader does, then
finds the evidence unit the question is about (:class:`~longmm.reading.answer.BestSentence`:
shared rare words plus dense similarity). If that unit is an asset's placeholder ("What digit
does figure 12 show?" matches ``[Figure 12: ...]``), the answer is what the asset's encoder
read from the image or the clip, cited at the placeholder; otherwise the text extractor (the
trained span head) answers from the evidence text.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from longmm.errors import DataError
from longmm.reading.answer.base import Answer, AnswerExtractor, AnswerSpan, Evidence
from longmm.reading.answer.sentence import BestSentence
from longmm.reading.document import Asset, Document
from longmm.reading.reader import DocumentIndex, Progress, RetrievalReader, Strategy

WEIGHTS = Path(__file__).resolve().parent / "weights"
PACKAGED_IMAGE_MODEL = WEIGHTS / "digits_cnn.safetensors"
PACKAGED_AUDIO_MODEL = WEIGHTS / "spoken_digits_cnn.safetensors"


# -- asset classifiers ---------------------------------------------------------------------------
class AssetModel:
    """A trained classifier for one modality, with the preprocessing it was trained with.

    Stored as one safetensors file: the classifier's weights, and as metadata the recipe's
    ``model`` section (to rebuild it) and the data module's preprocessing (classes, image size,
    normalization statistics)."""

    def __init__(self, model: torch.nn.Module, kind: str, preprocessing: dict[str, Any]) -> None:
        self.model = model.eval()
        self.kind = kind
        self.prep = preprocessing
        self.classes = [str(c) for c in preprocessing["classes"]]

    @classmethod
    def load(cls, path: str | Path) -> AssetModel:
        from safetensors import safe_open

        from longmm.runs import load_weights

        path = Path(path)
        if not path.is_file():
            raise DataError(str(path), "asset model weights not found")
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        for key in ("model", "preprocessing", "kind"):
            if key not in meta:
                raise DataError(str(path), f"no {key!r} metadata: not an asset model file")
        model = _build_task(json.loads(meta["model"]), str(path))
        model.load_state_dict(load_weights(path))
        return cls(model, meta["kind"], json.loads(meta["preprocessing"]))

    @torch.no_grad()
    def predict(self, items: Sequence[Any]) -> list[tuple[str, float]]:
        """Class and probability for each item: an image (uint8 ``(H, W[, C])``) or a clip
        (``(waveform float32 (T,), sample_rate)``)."""
        if not items:
            return []
        if self.kind == "audio":
            return [self._predict_audio(wave, rate) for wave, rate in items]
        from longmm.data.image import ImageNormalizer, to_chw_uint8

        size, channels = int(self.prep["image_size"]), int(self.prep["channels"])
        batch = torch.stack([to_chw_uint8(a, channels=channels, size=size) for a in items])
        norm = ImageNormalizer(channels, self.prep.get("normalize", "standard"))
        if "mean" in self.prep:
            norm.mean.copy_(torch.tensor(self.prep["mean"]))
            norm.std.copy_(torch.tensor(self.prep["std"]))
        probs = torch.softmax(self.model({"image": norm(batch)}), dim=-1)
        conf, idx = probs.max(dim=-1)
        return [(self.classes[int(i)], float(c)) for i, c in zip(idx, conf, strict=True)]

    def _predict_audio(self, wave: np.ndarray, rate: int) -> tuple[str, float]:
        from longmm.data.audio import LogMel, resample
        from longmm.data.modules import FeatureNormalizer

        p = self.prep
        target = int(p["sample_rate"])
        samples = resample(np.asarray(wave, dtype=np.float32), int(rate), target)
        samples = samples[: max(1, int(float(p["max_seconds"]) * target))]
        logmel = LogMel(
            target, n_fft=int(p["n_fft"]), hop_length=int(p["hop_length"]), n_mels=int(p["n_mels"])
        )
        norm = FeatureNormalizer(int(p["n_mels"]))
        norm.mean.copy_(torch.tensor(p["feature_mean"]))
        norm.std.copy_(torch.tensor(p["feature_std"]))
        x = torch.as_tensor(samples)[None]  # (1, T)
        feats, mask = logmel(x, torch.tensor([x.shape[1]]))
        feats = norm(feats).masked_fill(~mask[:, None, :], 0.0)
        probs = torch.softmax(self.model({"audio": feats, "audio_mask": mask}), dim=-1)[0]
        conf, idx = probs.max(dim=-1)
        return self.classes[int(idx)], float(conf)


def _build_task(model_config: dict[str, Any], where: str) -> torch.nn.Module:
    from jsonargparse import ArgumentParser

    from longmm.tasks import Task

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(Task, "model", required=True)
    try:
        parsed = parser.parse_object({"model": model_config})
    except Exception as err:  # jsonargparse raises its own error types
        raise DataError(where, f"cannot rebuild the model from its metadata: {err}") from err
    return parser.instantiate_classes(parsed).model


def export_asset_model(run: str | Path, out: str | Path, kind: str = "image") -> Path:
    """Package a ``longmm fit`` classifier run (``config.yaml``, ``data.json``,
    ``checkpoints/best.safetensors``) as one asset-model file."""
    import yaml

    from longmm.runs import load_weights, save_weights

    run = Path(run)
    for name in ("config.yaml", "data.json", "checkpoints/best.safetensors"):
        if not (run / name).is_file():
            raise DataError(str(run / name), "missing: give a finished `longmm fit` run folder")
    config = yaml.safe_load((run / "config.yaml").read_text())
    prep = json.loads((run / "data.json").read_text())["preprocessing"]
    model = dict(config["model"])
    init = dict(model.get("init_args") or {})
    init["num_classes"] = len(prep["classes"])
    model["init_args"] = init
    meta = {"model": json.dumps(model), "preprocessing": json.dumps(prep), "kind": kind}
    save_weights(load_weights(run / "checkpoints" / "best.safetensors"), out, metadata=meta)
    return Path(out)


def read_asset(asset: Asset) -> Any:
    """An image asset's pixels (uint8 ``(H, W, C)``) or a clip's ``(waveform, rate)``."""
    if asset.kind == "audio":
        import soundfile

        try:
            wave, rate = soundfile.read(asset.path, dtype="float32", always_2d=True)
        except Exception as err:  # soundfile raises its own LibsndfileError
            raise DataError(asset.path, f"not a readable audio file ({err})") from err
        return wave.mean(axis=1), int(rate)
    from longmm.data.sources.images import decode_image

    return decode_image(asset.path)


# -- the reader ----------------------------------------------------------------------------------
@dataclass
class AssetReading:
    """What an asset's encoder read: the class and its probability."""

    label: str
    probability: float
    model: str


@dataclass
class MultimodalIndex:
    """A retrieval index plus what each asset shows: ``readings[(doc, asset)]``."""

    index: DocumentIndex
    readings: dict[tuple[int, int], AssetReading] = field(default_factory=dict)
    seconds: float = 0.0


class AssetAwareExtractor:
    """An ``AnswerExtractor`` that answers from an asset when the evidence unit the question is
    about is an asset's placeholder, and otherwise asks ``text`` (the span head).

    ``context`` is the :class:`MultimodalIndex` being read (set by :class:`MultimodalReader`
    around each question). An asset answer's ``text`` is what the asset's encoder read (for
    example ``"7"``); its ``start``/``end`` cite the asset's placeholder in the document."""

    def __init__(self, text: AnswerExtractor, similarity: Any | None = None) -> None:
        self.text = text
        self.similarity = similarity
        self.context: MultimodalIndex | None = None

    def extract(self, question: str, passages: Sequence[Evidence]) -> AnswerSpan | None:
        if self.context is not None and self.context.readings and passages:
            span = self._from_asset(question, passages, self.context)
            if span is not None:
                return span
        return self.text.extract(question, passages)

    def _from_asset(
        self, question: str, passages: Sequence[Evidence], mm: MultimodalIndex
    ) -> AnswerSpan | None:
        unit = BestSentence(similarity=self.similarity).extract(question, passages)
        if unit is None:
            return None
        doc_index = passages[unit.evidence].doc
        doc = mm.index.documents[doc_index]
        for a, asset in enumerate(doc.assets):
            reading = mm.readings.get((doc_index, a))
            if reading is not None and asset.start < unit.end and unit.start < asset.end:
                return AnswerSpan(
                    reading.label, unit.evidence, asset.start, asset.end, reading.probability
                )
        return None


class MultimodalReader:
    """The retrieval reader for documents with figures and audio clips (see the module doc).

    ``extractor`` answers from text (default: the trained span head, :class:`SpanExtractor`);
    ``image_model`` reads figures (default: the packaged digit CNN), ``audio_model`` clips
    (default: the packaged spoken-digit CNN); other arguments go to
    :class:`~longmm.reading.reader.RetrievalReader`."""

    def __init__(
        self,
        strategy: Strategy = "hybrid",
        top_k: int = 3,
        extractor: AnswerExtractor | None = None,
        image_model: AssetModel | str | Path | None = None,
        audio_model: AssetModel | str | Path | None = None,
        **reader_options: Any,
    ) -> None:
        if extractor is None:
            from longmm.reading.answer.span_head import SpanExtractor

            extractor = SpanExtractor()
        self.extractor = AssetAwareExtractor(extractor)
        self.reader = RetrievalReader(
            strategy=strategy, top_k=top_k, extractor=self.extractor, **reader_options
        )
        if strategy != "bm25":
            self.extractor.similarity = lambda q, texts: self.reader.encoder.similarity(q, texts)
        self.strategy = strategy
        self._models: dict[str, Any] = {"image": image_model, "audio": audio_model}

    def model_for(self, kind: str) -> AssetModel:
        """The asset model of ``kind`` ("image" or "audio"), loaded on first use."""
        model = self._models[kind]
        if not isinstance(model, AssetModel):
            default = PACKAGED_IMAGE_MODEL if kind == "image" else PACKAGED_AUDIO_MODEL
            model = self._models[kind] = AssetModel.load(model or default)
        return model

    @property
    def chunker(self) -> Any:
        """The text reader's chunker (its token counter sizes documents)."""
        return self.reader.chunker

    @property
    def image_model(self) -> AssetModel:
        return self.model_for("image")

    def index(
        self,
        documents: Sequence[Document | str | Path] | Document | str | Path,
        progress: Progress | None = None,
    ) -> MultimodalIndex:
        """Index the documents' text (the retrieval reader) and read every asset."""
        t0 = time.perf_counter()
        index = self.reader.index(documents, progress)
        readings: dict[tuple[int, int], AssetReading] = {}
        for kind in ("image", "audio"):
            found = [
                (d, a)
                for d, doc in enumerate(index.documents)
                for a, asset in enumerate(doc.assets)
                if asset.kind == kind
            ]
            if not found:
                continue
            items = [read_asset(index.documents[d].assets[a]) for d, a in found]
            for (d, a), (label, p) in zip(found, self.model_for(kind).predict(items), strict=True):
                readings[(d, a)] = AssetReading(label, p, kind)
        return MultimodalIndex(index, readings, time.perf_counter() - t0)

    def answer(
        self,
        question: str,
        documents: MultimodalIndex | Sequence[Document | str | Path] | Document | str | Path,
        progress: Progress | None = None,
    ) -> Answer:
        """Answer ``question`` (see the module doc); ``seconds`` includes any indexing."""
        t0 = time.perf_counter()
        mm = (
            documents if isinstance(documents, MultimodalIndex) else self.index(documents, progress)
        )
        self.extractor.context = mm
        try:
            answer = self.reader.answer(question, mm.index, progress)
        finally:
            self.extractor.context = None
        answer.seconds = time.perf_counter() - t0
        return answer


# -- needle samples as multimodal documents ------------------------------------------------------
def write_needle_document(sample: Any, folder: str | Path) -> Path:
    """A multimodal needle sample (:mod:`longmm.reading.synth.needles`) as a JSONL document
    with its figures (PNG) and clips (WAV) beside it; returns the JSONL path."""
    from PIL import Image

    from longmm.io import atomic_write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    at = 0
    for k, att in enumerate(sorted(sample.attachments, key=lambda a: a.position)):
        before = sample.text[at : att.position].strip()
        if before:
            lines.append(json.dumps({"text": before}))
        caption_end = sample.text.find(".", att.position) + 1
        caption = sample.text[att.position + len(att.label) + 1 : caption_end].strip()
        if att.kind == "image":
            name = f"figure_{k:03d}.png"
            Image.fromarray(att.data).save(folder / name)
        else:
            import soundfile

            name = f"clip_{k:03d}.wav"
            soundfile.write(folder / name, att.data, att.sample_rate)
        lines.append(json.dumps({att.kind: name, "label": att.label, "caption": caption}))
        at = caption_end
    rest = sample.text[at:].strip()
    if rest:
        lines.append(json.dumps({"text": rest}))
    path = folder / "document.jsonl"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path

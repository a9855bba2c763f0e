"""What the trained question-passage models the reader runs share: the cross-encoder re-ranker
(:class:`~longmm.reading.retrieve.rerank.CrossEncoder`) and the extractive answer model
(:class:`~longmm.reading.answer.qa_model.AnswerModel`) are both a :class:`PairModel`.

Both read ``[CLS] question [SEP] passage [SEP]`` (:mod:`longmm.reading.pairs`). By default
they are the packaged MiniLM with the adapters our recipes trained
(``recipes/reranker.yaml``, ``recipes/answer_qa.yaml``; shipped in
``longmm/reading/weights/``, merged into the weights when loaded). A user may bring their
own: a local Hugging Face folder holding a cross-encoder (``...ForSequenceClassification``,
one relevance logit, e.g. an MS MARCO MiniLM) or an extractive QA model
(``...ForQuestionAnswering``), or an adapter file / run folder made by our recipes.

``backend``: ``torch``, ``onnx`` or ``onnx-int8`` (``auto``: ONNX when onnxruntime is
installed; int8 for the answer model, float32 for the re-ranker, whose int8 form picked
another top passage than torch on 29 % of Qasper questions). The ONNX form is exported once into the
cache folder, checked against torch first (largest difference at most ``1e-3`` on a probe
batch, else the export fails), then quantised; the torch-free path needs no torch once the
export exists.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from longmm.errors import DataError, LongmmError
from longmm.reading.pairs import pair_tokenizer
from longmm.reading.retrieve.base import Backend, cache_dir, resolve_backend
from longmm.reading.retrieve.onnx import export_onnx

WEIGHTS = Path(__file__).resolve().parent / "weights"
Kind = Literal["rerank", "qa"]
PACKAGED = {"rerank": WEIGHTS / "reranker.safetensors", "qa": WEIGHTS / "answer_qa.safetensors"}
ARCHITECTURE = {"rerank": "ForSequenceClassification", "qa": "ForQuestionAnswering"}
OUTPUTS = {"rerank": ["logits"], "qa": ["start_logits", "end_logits"]}
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


class PairModel:
    """A question-passage model (re-ranker or answer model) on torch or ONNX Runtime.

    ``source``: ``None`` (the packaged adapters), an adapter ``.safetensors`` file, a run folder
    holding one, or a Hugging Face model folder."""

    kind: Kind = "rerank"
    quantize_by_default = True  # what ``backend="auto"`` picks: int8 or float32 ONNX

    def __init__(
        self,
        source: str | Path | None = None,
        backend: Backend = "auto",
        batch_size: int = 32,
        threads: int | None = None,
    ) -> None:
        self.backend = resolve_backend(backend, quantized=self.quantize_by_default)
        self.batch_size = batch_size
        self.threads = threads
        self.weights, self.folder, self.meta = resolve_source(self.kind, source)
        base = str(self.folder) if self.folder is not None else self.meta.get("base")
        self.tokenizer = pair_tokenizer(base)
        self._model: Any = None
        self._session: Any = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return str(self.weights or self.folder)

    # -- the model --------------------------------------------------------------------------
    def torch_model(self) -> Any:
        if self._model is None:
            if self.weights is not None:
                from longmm.models.adapted import load_adapted

                self._model, _ = load_adapted(self.weights)
            else:
                self._model = load_folder(self.kind, self.folder)
        return self._model

    def onnx_path(self) -> Path:
        files = [self.weights] if self.weights is not None else _weight_files(self.folder)
        key = hashlib.sha1()
        for f in files:
            stat = f.stat()
            key.update(f"{f.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        stem = (self.weights or self.folder).stem if self.weights else self.folder.name
        name = "model-int8.onnx" if self.backend == "onnx-int8" else "model.onnx"
        return cache_dir() / "onnx" / f"{self.kind}-{stem}-{key.hexdigest()[:12]}" / name

    def session(self) -> Any:
        if self._session is None:
            import onnxruntime as ort

            path = self.onnx_path()
            if not path.is_file():
                export_onnx(
                    _Outputs(self.torch_model(), self.kind),
                    path,
                    quantize=self.backend == "onnx-int8",
                    inputs=INPUTS,
                    outputs=OUTPUTS[self.kind],
                    per_token=self.kind == "qa",
                )
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.threads or _default_threads()
            opts.inter_op_num_threads = 1
            self._session = ort.InferenceSession(
                str(path), opts, providers=["CPUExecutionProvider"]
            )
        return self._session

    def run(
        self, rows: Sequence[Sequence[int]], types: Sequence[Sequence[int]]
    ) -> list[np.ndarray]:
        """The model's outputs for padded rows (``(B, ...)`` float32 each)."""
        width = max(len(r) for r in rows)
        ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        seg = np.zeros_like(ids)
        for i, (r, t) in enumerate(zip(rows, types, strict=True)):
            ids[i, : len(r)] = r
            mask[i, : len(r)] = 1
            seg[i, : len(t)] = t
        with self._lock:
            if self.backend == "torch":
                import torch

                model = self.torch_model()
                with torch.inference_mode():
                    out = _Outputs(model, self.kind)(
                        torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(seg)
                    )
                return [o.float().numpy() for o in out]
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": seg}
            names = {i.name for i in self.session().get_inputs()}
            outs = self.session().run(None, {k: v for k, v in feeds.items() if k in names})
            return [np.asarray(o, dtype=np.float32) for o in outs]


class _Outputs:
    """The Hugging Face model as ``(ids, mask, types) -> outputs`` (a tuple), for ONNX."""

    def __new__(cls, model: Any, kind: Kind):
        from torch import nn

        class Outputs(nn.Module):
            def __init__(self, inner: nn.Module) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, input_ids, attention_mask, token_type_ids):
                out = self.inner(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    token_type_ids=token_type_ids,
                )
                return tuple(getattr(out, name) for name in OUTPUTS[kind])

        return Outputs(model).eval()


def _default_threads() -> int:
    import os

    return max(1, min(os.cpu_count() or 1, 8))


def _weight_files(folder: Path | None) -> list[Path]:
    assert folder is not None
    files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("pytorch_model*.bin"))
    return files or [folder / "config.json"]


def resolve_source(
    kind: Kind, source: str | Path | None
) -> tuple[Path | None, Path | None, dict[str, Any]]:
    """``(adapter file, model folder, metadata)`` for a model source; one of the first two
    is set. A folder that is neither a run folder nor a model of this kind is an error
    that says what is missing."""
    from longmm.reading.adapter_file import read_adapter_metadata

    what = "re-ranker (cross-encoder)" if kind == "rerank" else "extractive QA model"
    if source is None:
        path = PACKAGED[kind]
        if not path.is_file():
            raise DataError(str(path), f"the packaged {what} weights are missing")
    else:
        path = Path(source)
        if not path.exists():
            raise DataError(str(path), f"{what}: no such file or folder")
    if path.is_dir():
        run_file = path / PACKAGED[kind].name
        if run_file.is_file():
            path = run_file
        else:
            check_folder(kind, path)
            return None, path, {}
    info = read_adapter_metadata(path)
    if info["head"] != kind:
        raise DataError(str(path), f"an adapter for {info['head']!r}, not a {what}")
    return path, None, info["meta"]


def check_folder(kind: Kind, folder: Path) -> None:
    """A Hugging Face folder of the right kind: config.json naming a ``...{ARCHITECTURE}``
    model, weights and tokenizer.json."""
    import json

    what = "re-ranker (cross-encoder)" if kind == "rerank" else "extractive QA model"
    config = folder / "config.json"
    if not config.is_file():
        raise DataError(
            str(folder),
            f"not a Hugging Face model folder (no config.json) nor a run folder with "
            f"{PACKAGED[kind].name}",
        )
    try:
        archs = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, ValueError) as exc:
        raise DataError(str(config), f"unreadable config.json ({exc})") from exc
    if not any(str(a).endswith(ARCHITECTURE[kind]) for a in archs):
        raise DataError(
            str(folder),
            f"config.json names {archs or 'no architectures'}; a {what} needs a "
            f"'...{ARCHITECTURE[kind]}' model",
        )
    if _weight_files(folder) == [config]:
        raise DataError(str(folder), "no weights (model.safetensors or pytorch_model.bin)")
    if not (folder / "tokenizer.json").is_file():
        raise DataError(str(folder), "no tokenizer.json (a fast tokenizer) in the model folder")


def load_folder(kind: Kind, folder: Path | None) -> Any:
    """A local Hugging Face model of ``kind`` (never downloads)."""
    import transformers
    from transformers.utils import logging as hf_logging

    assert folder is not None
    hf_logging.disable_progress_bar()
    auto = getattr(transformers, f"AutoModel{ARCHITECTURE[kind]}")
    try:
        return auto.from_pretrained(str(folder), local_files_only=True).eval()
    except (OSError, ValueError) as exc:
        raise LongmmError(f"{folder}: could not load the model ({exc})") from exc

"""Retrieval over chunks: BM25 (bm25s), dense MiniLM embeddings (PyTorch or ONNX Runtime,
optionally int8), and hybrid ranking by reciprocal rank fusion.

Each retriever ranks the chunks of a collection for a question and returns
``(chunk index, score)`` pairs, best first. The dense encoder is the packaged
all-MiniLM-L6-v2 (mean pooled, normalised, as sentence-transformers uses it); its ONNX form
is exported once from the same weights into a cache folder (``$LONGMM_CACHE`` or
``~/.cache/longmm``), so nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from longmm.errors import LongmmError
from longmm.reading.enhance import model_folder

Backend = Literal["auto", "torch", "onnx", "onnx-int8"]
BACKENDS = ("auto", "torch", "onnx", "onnx-int8")


# -- BM25 --------------------------------------------------------------------------------------


def _stemmer():
    try:
        import Stemmer

        return Stemmer.Stemmer("english")
    except ImportError:  # pragma: no cover - PyStemmer is a dependency
        return None


# A word, an identifier, a number, a version or a file name: ``Z_DEFAULT_COMPRESSION``,
# ``deflateInit2``, ``16384``, ``1.2.13``, ``zpipe.c``, ``UTF-8``.
_TOKEN = re.compile(r"\w+(?:[.\-]\w+)*")
_PIECES = re.compile(r"[._\-]+")
# The parts of an identifier: camelCase humps, runs of capitals, digits.
_PARTS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+|[^\W\d_]+")


QUESTION_WORDS = frozenset({"what", "which", "who", "whom", "whose", "when", "where", "why", "how"})


class LexicalTokenizer:
    """BM25's tokens: English words lower-cased, stop words dropped, Snowball-stemmed; an
    identifier, number or version also as it is typed (lower-cased, whole) besides its
    parts split at underscores, dots, hyphens, case changes and digits, so that
    ``Z_DEFAULT_COMPRESSION``, ``CHUNK`` and ``16384`` are found as the user types them and
    ``deflateInit`` also by ``deflate``."""

    def __init__(self) -> None:
        from bm25s.stopwords import STOPWORDS_EN

        # question words too: every question has one, no passage is about them
        self.stopwords = frozenset(STOPWORDS_EN) | QUESTION_WORDS
        self.stemmer = _stemmer()
        self._stems: dict[str, str] = {}

    def _stem(self, word: str) -> str:
        stem = self._stems.get(word)
        if stem is None:
            stem = self.stemmer.stemWord(word) if self.stemmer is not None else word
            self._stems[word] = stem
        return stem

    def __call__(self, text: str) -> list[str]:
        out: list[str] = []
        for m in _TOKEN.finditer(text):
            raw = m.group()
            parts = [p for piece in _PIECES.split(raw) for p in _PARTS.findall(piece)]
            if len(parts) > 1:
                out.append(raw.lower())
            for part in parts:
                low = part.lower()
                if low in self.stopwords or (len(low) < 2 and not low.isdigit()):
                    continue
                out.append(low if low[0].isdigit() else self._stem(low))
        return out


class BM25Retriever:
    """Okapi BM25 (bm25s) over chunk texts, tokenized by :class:`LexicalTokenizer`.

    ``texts`` may differ from the chunk texts: the reader indexes each chunk with its section
    path in front, so that a question about "the dataset" also finds the chunks of the
    section "Dataset" that never repeat the word.
    """

    def __init__(self, texts: Sequence[str], k1: float = 1.2, b: float = 0.75) -> None:
        import bm25s

        self.tokenize = LexicalTokenizer()
        self.n = len(texts)
        self.model = bm25s.BM25(k1=k1, b=b)
        self.model.index([self.tokenize(t) for t in texts], show_progress=False)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every chunk for ``query``: ``(n,)``."""
        q = self.tokenize(query)
        if not q:
            return np.zeros(self.n, dtype=np.float32)
        return np.asarray(self.model.get_scores(q), dtype=np.float32)

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        return top_k(self.scores(query), k)


def top_k(scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    """Indices and values of the ``k`` largest scores, best first (ties: lower index)."""
    k = min(k, len(scores))
    if k <= 0:
        return []
    part = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    order = sorted(part.tolist(), key=lambda i: (-float(scores[i]), i))
    return [(i, float(scores[i])) for i in order]


# -- dense -------------------------------------------------------------------------------------


def resolve_backend(backend: str) -> Backend:
    """The backend ``auto`` stands for here: ``onnx-int8`` when onnxruntime is installed."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        try:
            import onnxruntime  # noqa: F401

            return "onnx-int8"
        except ImportError:
            return "torch"
    return backend  # type: ignore[return-value]


def cache_dir() -> Path:
    return Path(os.environ.get("LONGMM_CACHE") or Path.home() / ".cache" / "longmm")


class DenseEncoder:
    """Sentence embeddings from a BERT-like model folder (``None``: the packaged MiniLM).

    ``backend``: ``torch`` runs the model in PyTorch; ``onnx`` and ``onnx-int8`` run an ONNX
    export of it in ONNX Runtime (``int8``: weights quantised dynamically, about twice as
    fast on CPU); ``auto`` takes ``onnx-int8`` when onnxruntime is installed. Texts are sorted
    by length and encoded in batches of ``batch_size`` (little padding); longer texts are cut
    at ``max_length`` tokens. Identical texts are encoded once.
    """

    def __init__(
        self,
        path: str | None = None,
        backend: Backend = "auto",
        batch_size: int = 32,
        max_length: int = 256,
        threads: int | None = None,
    ) -> None:
        self.backend = resolve_backend(backend)
        self.folder = model_folder(path)
        self.batch_size = batch_size
        self.max_length = max_length
        self.threads = threads
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length)
        self.tokenizer.no_padding()
        self._model = None
        self._session = None
        self._lock = threading.Lock()

    # model loading ------------------------------------------------------------------------
    def _torch_model(self):
        if self._model is None:
            from longmm.encoders.pretrained import load_pretrained

            self._model = _MeanPooled(load_pretrained(self.folder)).eval()
        return self._model

    def onnx_path(self) -> Path:
        """Where the ONNX export of this model lives (made on first use)."""
        weights = next(
            (
                p
                for p in (self.folder / "model.safetensors", self.folder / "pytorch_model.bin")
                if p.is_file()
            ),
            self.folder / "config.json",
        )
        stat = weights.stat()
        key = hashlib.sha1(
            f"{weights.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()
        ).hexdigest()[:12]
        name = "model-int8.onnx" if self.backend == "onnx-int8" else "model.onnx"
        return cache_dir() / "onnx" / f"{self.folder.name}-{key}" / name

    def _onnx_session(self):
        if self._session is None:
            import onnxruntime as ort

            path = self.onnx_path()
            if not path.is_file():
                export_onnx(self._torch_model(), path, quantize=self.backend == "onnx-int8")
            opts = ort.SessionOptions()
            import torch

            opts.intra_op_num_threads = self.threads or torch.get_num_threads()
            opts.inter_op_num_threads = 1
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self._session = ort.InferenceSession(
                str(path), opts, providers=["CPUExecutionProvider"]
            )
        return self._session

    # encoding -----------------------------------------------------------------------------
    def encode(self, texts: Sequence[str], progress=None) -> np.ndarray:
        """``(len(texts), dim)`` float32 unit vectors. ``progress(done, total)`` is called
        after each batch when given."""
        unique: dict[str, int] = {}
        for t in texts:
            unique.setdefault(t, len(unique))
        uniq = list(unique)
        out = self._encode_unique(uniq, progress)
        return out[[unique[t] for t in texts]]

    def _encode_unique(self, texts: list[str], progress) -> np.ndarray:
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        encodings = self.tokenizer.encode_batch(texts)
        order = np.argsort([len(e.ids) for e in encodings], kind="stable")
        result: np.ndarray | None = None
        with self._lock:
            for b in range(0, len(order), self.batch_size):
                idx = order[b : b + self.batch_size]
                width = max(len(encodings[i].ids) for i in idx)
                ids = np.zeros((len(idx), width), dtype=np.int64)
                mask = np.zeros((len(idx), width), dtype=np.int64)
                for r, i in enumerate(idx):
                    e = encodings[i].ids
                    ids[r, : len(e)] = e
                    mask[r, : len(e)] = 1
                vecs = self._run(ids, mask)
                if result is None:
                    result = np.zeros((len(texts), vecs.shape[1]), dtype=np.float32)
                result[idx] = vecs
                if progress is not None:
                    progress(min(b + self.batch_size, len(order)), len(order))
        assert result is not None
        return result

    def _run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self.backend == "torch":
            import torch

            with torch.inference_mode():
                out = self._torch_model()(torch.from_numpy(ids), torch.from_numpy(mask))
            return out.numpy().astype(np.float32)
        session = self._onnx_session()
        (out,) = session.run(None, {"input_ids": ids, "attention_mask": mask})
        return np.asarray(out, dtype=np.float32)

    def similarity(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """Cosine similarity of ``query`` to each text: ``(len(texts),)``."""
        vecs = self.encode([query, *texts])
        return vecs[1:] @ vecs[0]


class _MeanPooled:
    """The model with mean pooling over real tokens and L2 normalisation (one output)."""

    def __new__(cls, model):
        import torch
        from torch import nn

        class MeanPooled(nn.Module):
            def __init__(self, inner: nn.Module) -> None:
                super().__init__()
                self.inner = inner

            def forward(
                self, input_ids: torch.Tensor, attention_mask: torch.Tensor
            ) -> torch.Tensor:
                hidden = self.inner(
                    input_ids=input_ids, attention_mask=attention_mask
                ).last_hidden_state
                weights = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
                pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
                return nn.functional.normalize(pooled, dim=-1)  # (B, D)

        return MeanPooled(model)


def export_onnx(
    model,
    path: Path,
    quantize: bool,
    inputs: Sequence[str] = ("input_ids", "attention_mask"),
    outputs: Sequence[str] = ("embedding",),
    per_token: bool = False,
    tolerance: float = 1e-3,
) -> Path:
    """Export ``model(*inputs) -> outputs`` to ONNX at ``path`` (dynamic batch and length;
    ``per_token`` outputs keep the length axis) and check the fp32 export against torch on a
    probe batch (largest difference at most ``tolerance``, else an error); ``quantize`` then
    stores int8 weights (onnxruntime dynamic quantisation). Written to a temporary name and
    renamed, so a half-written model is never loaded."""
    import warnings

    import torch

    from longmm.io import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    probe = {name: torch.ones((2, 16), dtype=torch.long) for name in inputs}
    probe["input_ids"] = torch.arange(1000, 1032).view(2, 16)
    probe["attention_mask"][1, 10:] = 0
    if "token_type_ids" in probe:
        probe["token_type_ids"][:, :6] = 0
    axes = {name: {0: "batch", 1: "length"} for name in inputs}
    axes.update(
        {name: {0: "batch", 1: "length"} if per_token else {0: "batch"} for name in outputs}
    )
    with atomic_path(path) as tmp:
        fp32 = tmp.with_suffix(".fp32.onnx")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    model,
                    tuple(probe[name] for name in inputs),
                    str(fp32),
                    input_names=list(inputs),
                    output_names=list(outputs),
                    dynamic_axes=axes,
                    opset_version=17,
                    dynamo=False,
                )
            _check_parity(model, fp32, probe, inputs, tolerance)
            if quantize:
                _quantize(fp32, tmp)
            else:
                os.replace(fp32, tmp)
        except LongmmError:
            raise
        except Exception as exc:
            raise LongmmError(f"could not export the model to ONNX at {path}: {exc}") from exc
        finally:
            fp32.unlink(missing_ok=True)
    return path


def _check_parity(model, onnx_file: Path, probe, inputs: Sequence[str], tolerance: float) -> None:
    import onnxruntime as ort
    import torch

    with torch.inference_mode():
        expected = model(*(probe[name] for name in inputs))
    if isinstance(expected, torch.Tensor):
        expected = (expected,)
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    got = session.run(None, {name: probe[name].numpy() for name in inputs})
    worst = max(
        float(np.max(np.abs(np.asarray(g) - e.float().numpy())))
        for g, e in zip(got, expected, strict=True)
    )
    if not worst <= tolerance:
        raise LongmmError(
            f"the ONNX export of {type(model).__name__} differs from torch by {worst:.2e} "
            f"(> {tolerance:g}) on a probe batch; not using it"
        )


def _quantize(fp32: Path, out: Path) -> None:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    # quantize_dynamic logs advice at WARNING through the root logger (and adds a handler
    # to it): keep the user's logging as it was.
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.setLevel(level)
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)


# -- fusion ------------------------------------------------------------------------------------


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[int]], k: int = 60, weights: Sequence[float] | None = None
) -> list[tuple[int, float]]:
    """Fuse rankings (lists of ids, best first): score(id) = sum_r w_r / (k + rank_r(id)),
    ranks from 1. Returns ``(id, score)`` best first (ties: the better best rank)."""
    weights = weights or [1.0] * len(rankings)
    scores: dict[int, float] = {}
    best: dict[int, int] = {}
    for w, ranking in zip(weights, rankings, strict=True):
        for rank, i in enumerate(ranking, 1):
            scores[i] = scores.get(i, 0.0) + w / (k + rank)
            best[i] = min(best.get(i, rank), rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], best[kv[0]], kv[0]))


class EmbeddingCache:
    """Embeddings of a fixed list of texts, computed on demand and kept."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.texts = texts
        self.vectors: np.ndarray | None = None
        self.done = np.zeros(len(texts), dtype=bool)

    def embed(
        self, encoder: DenseEncoder, ids: Sequence[int] | np.ndarray, progress=None
    ) -> np.ndarray:
        """Embeddings of texts ``ids`` (computing the missing ones): ``(len(ids), D)``."""
        ids = np.asarray(ids, dtype=np.int64)
        todo = np.unique(ids[~self.done[ids]])
        if len(todo):
            vecs = encoder.encode([self.texts[i] for i in todo], progress)
            if self.vectors is None:
                self.vectors = np.zeros((len(self.texts), vecs.shape[1]), dtype=np.float32)
            self.vectors[todo] = vecs
            self.done[todo] = True
        if self.vectors is None:
            return np.zeros((0, 0), dtype=np.float32)
        return self.vectors[ids]

"""Dense retrieval: sentence embeddings of the packaged all-MiniLM-L6-v2 (mean pooled,
normalised, as sentence-transformers uses it) on PyTorch or ONNX Runtime (optionally int8),
their cache per index, and the ``dense`` ranker. The ONNX form is exported once from the same
weights into the cache folder (:func:`~longmm.reading.retrieve.base.cache_dir`), so nothing
is downloaded."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from longmm.reading.enhance import model_folder
from longmm.reading.retrieve.base import (
    Backend,
    ChunkIndex,
    Progress,
    cache_dir,
    resolve_backend,
    stage,
    top_k,
)
from longmm.reading.retrieve.onnx import export_onnx


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


class DenseRanker:
    """The ``dense`` strategy: cosine of each chunk's embedding to the question's, the best
    ``depth`` chunks. ``encoder``: a :class:`DenseEncoder` (anything with its ``encode``), or
    a function that gives it (the model is then loaded only when a ranking needs it)."""

    def __init__(self, encoder: DenseEncoder | Callable[[], DenseEncoder]) -> None:
        self._encoder = encoder

    @property
    def encoder(self) -> DenseEncoder:
        given = self._encoder
        return given if hasattr(given, "encode") else given()  # type: ignore[operator]

    def rank(
        self, question: str, index: ChunkIndex, depth: int, progress: Progress | None = None
    ) -> list[tuple[int, float]]:
        return self.rank_pool(question, index, np.arange(index.n_chunks), depth, progress)

    def rank_pool(
        self,
        question: str,
        index: ChunkIndex,
        pool: np.ndarray,
        depth: int,
        progress: Progress | None = None,
    ) -> list[tuple[int, float]]:
        """The best ``depth`` chunks of ``pool`` (chunk ids), embedding those not yet
        embedded."""
        vecs = index.chunk_vectors.embed(self.encoder, pool, stage(progress, "embed"))  # (P, D)
        ranked = top_k(vecs @ self.encoder.encode([question])[0], depth)
        return [(int(pool[i]), s) for i, s in ranked]

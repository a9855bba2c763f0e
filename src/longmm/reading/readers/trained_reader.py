"""Running the trainable readers (:mod:`longmm.reading.readers.networks`) on generated
long-context tasks (:mod:`longmm.reading.synth.needles`): their tokens, reader files, and the
:class:`TrainedReader` that answers :class:`~longmm.reading.synth.needles.NeedleSample` s
(what ``longmm bench needle --strategy attention|hierarchical|memory`` runs).

**Tokens** are all-MiniLM-L6-v2's WordPiece (the unit the needle lengths count), read from
its packaged ``tokenizer.json``; the answer is cut from the document text by the tokens'
character offsets, never generated, so a digit string comes out exactly.

**Several passes.** Variable tracking asks for every name bound to a value through a chain
``VAR A = 12345 ... VAR B = VAR A ...``. A reader answers it in passes: the names found so far
are appended to the question, and a pass may then find the names assigned from them; it stops
when a pass finds nothing new (at most ``max_passes``). One pass is the usual single-answer
reading. Training them: :mod:`longmm.reading.trained`.
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from longmm.errors import CheckpointError, DataError
from longmm.io import atomic_path
from longmm.reading.readers.networks import READERS
from longmm.reading.synth.needles import NeedleSample, score

MAX_QUESTION_TOKENS = 96
# Tasks whose answer is one string (the reader reports its best), and tasks answered in passes.
SINGLE_ANSWER_TASKS = frozenset({"passkey", "niah_single", "niah_multikey"})
CHAINED_TASKS = frozenset({"variable_tracking"})
# Trained readers are run outputs (several MB each), not package data: the needle bench's
# strategies read them from this folder (``recipes/reader_*.yaml`` say how to make them).
READERS_DIR_ENV = "LONGMM_READERS"
DEFAULT_READERS_DIR = "runs/readers"


@functools.lru_cache(maxsize=1)
def tokenizer():
    """The all-MiniLM-L6-v2 WordPiece tokenizer (a ``tokenizers.Tokenizer``), offline."""
    from tokenizers import Tokenizer

    from longmm.data.text import pretrained_path

    tok = Tokenizer.from_file(str(pretrained_path(None) / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


def vocab_size() -> int:
    return tokenizer().get_vocab_size()


@dataclass
class Encoded:
    """A document and question as token ids, with the document's character offsets."""

    doc: np.ndarray  # (N,) int64
    offsets: np.ndarray  # (N, 2) character range of each token
    question: np.ndarray  # (G,) int64


def encode(text: str, question: str) -> Encoded:
    if not text.strip():
        raise DataError("document", "is empty: nothing to read")
    tok = tokenizer()
    doc = tok.encode(text, add_special_tokens=False)
    q = tok.encode(question, add_special_tokens=False).ids[:MAX_QUESTION_TOKENS]
    if not q:
        raise DataError("question", "is empty")
    return Encoded(
        np.asarray(doc.ids, dtype=np.int64),
        np.asarray(doc.offsets, dtype=np.int64).reshape(-1, 2),
        np.asarray(q, dtype=np.int64),
    )


def with_known(question: str, known: list[str]) -> str:
    """The question of a later pass: the names found so far appended."""
    return question if not known else f"{question} Found: {' '.join(known)}."


def extract(text: str, offsets: np.ndarray, logits: np.ndarray, threshold: float = 0.0):
    """Answers from token logits: maximal runs of tokens above ``threshold`` (joined across
    WordPiece continuations), cut from ``text`` by offsets; distinct strings, best first."""
    above = logits > threshold
    runs: list[tuple[float, str]] = []
    i, n = 0, len(logits)
    while i < n:
        if not above[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and above[j + 1]:
            j += 1
        s, e = int(offsets[i, 0]), int(offsets[j, 1])
        while s > 0 and text[s - 1].isalnum():  # widen to whole words
            s -= 1
        while e < len(text) and text[e].isalnum():
            e += 1
        runs.append((float(logits[i : j + 1].max()), text[s:e]))
        i = j + 1
    best: dict[str, float] = {}
    for value, word in runs:
        best[word] = max(best.get(word, -math.inf), value)
    return sorted(best, key=lambda w: -best[w])


def save_reader(
    reader: nn.Module, name: str, args: dict[str, Any], path: Path, threshold: float = 0.0
) -> None:
    """Weights (float16, to keep the file small) + ``{"reader", "args", "threshold"}``
    metadata. ``threshold``: the logit above which a token is tagged (a loss that weights
    positives by ``w`` moves the even-odds logit to ``log w``)."""
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in reader.state_dict().items()}
    meta = {"reader": name, "args": json.dumps(args), "threshold": str(threshold)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_reader(path: str | Path) -> tuple[nn.Module, float]:
    """The reader and its tagging threshold."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: reader weights not found (train one: see recipes/)")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if "reader" not in meta or meta["reader"] not in READERS:
        raise CheckpointError(f"{path}: not a reader file (metadata 'reader' missing)")
    reader = READERS[meta["reader"]](**json.loads(meta["args"]))
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    reader.load_state_dict(state)
    return reader.eval(), float(meta.get("threshold", 0.0))


class TrainedReader:
    """Answers needle samples with a trained reader, in passes (see the module docstring)."""

    def __init__(
        self, reader: nn.Module, threshold: float = 0.0, max_passes: int = 8, bf16: bool = True
    ) -> None:
        self.reader, self.threshold = reader.eval(), threshold
        self.max_passes, self.bf16 = max_passes, bf16

    @classmethod
    def from_file(cls, path: str | Path, **kw: Any) -> TrainedReader:
        reader, threshold = load_reader(path)
        return cls(reader, threshold, **kw)

    @torch.no_grad()
    def scores(self, text: str, question: str) -> tuple[Encoded, np.ndarray]:
        enc = encode(text, question)
        doc = torch.from_numpy(enc.doc)[None]
        q = torch.from_numpy(enc.question)[None]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.reader(
                doc, torch.ones_like(doc, dtype=torch.bool), q, torch.ones_like(q, dtype=torch.bool)
            )
        return enc, logits[0].float().numpy()

    def answers(self, text: str, question: str, passes: int = 1, top: int | None = None):
        """Answers, best first: up to ``passes`` passes (stopping when one finds nothing
        new), then the ``top`` best (all when None)."""
        known: list[str] = []
        for _ in range(passes):
            enc, logits = self.scores(text, with_known(question, known))
            found = extract(text, enc.offsets, logits, self.threshold)
            new = [w for w in found if w not in known]
            if not new:
                break
            known += new
        return known if top is None else known[:top]

    def __call__(self, sample: NeedleSample) -> str:
        passes = self.max_passes if sample.task in CHAINED_TASKS else 1
        top = 1 if sample.task in SINGLE_ANSWER_TASKS else None
        return " ".join(self.answers(sample.text, sample.question, passes, top))


def accuracy(solver: TrainedReader, samples: list[NeedleSample]) -> float:
    return float(np.mean([score(solver(s), s.answers) for s in samples]))


def _solver(name: str) -> TrainedReader:
    folder = Path(os.environ.get(READERS_DIR_ENV, DEFAULT_READERS_DIR))
    path = folder / f"reader_{name}.safetensors"
    if not path.is_file():
        raise DataError(
            str(path),
            f"no trained {name} reader: train it with `longmm fit --config "
            f"recipes/reader_{name}.yaml --out runs/reader_{name}`, then copy its "
            f"reader.safetensors here (or set {READERS_DIR_ENV} to the folder holding it)",
        )
    return TrainedReader.from_file(path)


def attention_solver() -> TrainedReader:
    """``longmm bench needle --strategy attention``: the trained efficient-attention reader."""
    return _solver("attention")


def hierarchical_solver() -> TrainedReader:
    """``--strategy hierarchical``: the trained hierarchical reader."""
    return _solver("hierarchical")


def memory_solver() -> TrainedReader:
    """``--strategy memory``: the trained recurrent-memory reader."""
    return _solver("memory")


def strict_scores(prediction: str, answers: tuple[str, ...]) -> dict[str, float]:
    """RULER's score is recall (the share of answers found in the prediction), which a reader
    that names every variable would max out; this adds precision and exact set match."""
    said = set(prediction.split())
    want = set(answers)
    hit = len(said & want)
    return {
        "recall": hit / max(len(want), 1),
        "precision": hit / max(len(said), 1),
        "exact": float(said == want),
    }


def evaluate(
    solver: TrainedReader, task: str, length: int, samples: int, seed: int = 0
) -> dict[str, Any]:
    """Mean strict scores over ``samples`` documents, depths spread over 0..1 (the samples of
    ``longmm bench needle`` with the same seed)."""
    from longmm.reading.synth.needles import make_samples

    rows = [
        strict_scores(solver(s), s.answers) for s in make_samples(task, length, samples, seed=seed)
    ]
    return {
        "task": task,
        "length": length,
        "samples": samples,
        **{k: round(float(np.mean([r[k] for r in rows])), 4) for k in rows[0]},
    }

"""Training the trainable readers (:mod:`longmm.reading.readers`) on generated
long-context tasks (:mod:`longmm.reading.synth.needles`).

**Targets.** A reader scores each document token; the tokens of the answers *inside the target
needles* are positives (a needle's answer anywhere else would be a leak, and the generators
never let one occur). Tokens are all-MiniLM-L6-v2's WordPiece
(:func:`~longmm.reading.readers.trained_reader.encode`).

**Several passes.** A reader answers variable tracking in passes, the names found so far
appended to the question (:class:`~longmm.reading.readers.trained_reader.TrainedReader`).
Training shows the reader the same states: a random number of the chain's names already in
the question, and as targets the names one step away.

**Training** is a :class:`ReadNeedles` task (Lightning; ``longmm fit --config
recipes/reader_*.yaml``) on :class:`NeedleReadingData` (samples generated per epoch from a
seed, at 512-4096 tokens). The run writes ``reader.safetensors`` (weights + architecture); a
:class:`~longmm.reading.readers.trained_reader.TrainedReader` loads it.
``python -m longmm.reading.trained`` scores a reader file or exports one from a checkpoint.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from longmm.data.datamodule import SourceDataModule
from longmm.data.schema import SourceData
from longmm.errors import CheckpointError, DataError
from longmm.reading.readers.networks import READERS, HierarchicalReader
from longmm.reading.readers.trained_reader import (
    Encoded,
    TrainedReader,
    encode,
    evaluate,
    load_reader,
    save_reader,
    vocab_size,
    with_known,
)
from longmm.reading.synth.needles import NeedleSample, make_sample
from longmm.tasks.base import Task
from longmm.training.optim import OptimizerName, SchedulerName


def _whole_word(text: str, word: str, start: int, stop: int) -> list[tuple[int, int]]:
    out, at = [], text.find(word, start, stop)
    while at >= 0:
        before = text[at - 1] if at > 0 else " "
        after = text[at + len(word)] if at + len(word) < len(text) else " "
        if not before.isalnum() and not after.isalnum():
            out.append((at, at + len(word)))
        at = text.find(word, at + 1, stop)
    return out


def training_state(sample: NeedleSample, rng: np.random.Generator) -> tuple[str, list[str]]:
    """A reading state for training: (question with the names known so far, answers to tag).

    Variable tracking: ``k`` of the chain's names known (random), targets the first ``k + 1``
    (the known ones and the next); other tasks: the question and all its answers."""
    if sample.task != "variable_tracking":
        return sample.question, list(sample.answers)
    k = int(rng.integers(0, len(sample.answers)))
    known = list(sample.answers[:k])
    return with_known(sample.question, known), list(sample.answers[: k + 1])


def token_labels(sample: NeedleSample, enc: Encoded, answers: list[str]) -> np.ndarray:
    """1.0 on document tokens that overlap an occurrence of an answer inside a target
    needle, else 0.0."""
    labels = np.zeros(len(enc.doc), dtype=np.float32)
    starts, ends = enc.offsets[:, 0], enc.offsets[:, 1]
    for a, b in sample.needle_spans:
        for word in answers:
            for s, e in _whole_word(sample.text, word, a, b):
                labels[(starts < e) & (ends > s)] = 1.0
    return labels


# -- data ---------------------------------------------------------------------------------------
class NeedleExamples(Dataset):
    """Generated training examples: sample ``i`` of an epoch is a fixed function of
    ``(seed, epoch, i)``; task, length, depth and haystack drawn at random."""

    def __init__(
        self,
        count: int,
        tasks: list[str],
        min_tokens: int,
        max_tokens: int,
        haystacks: list[str],
        seed: int,
    ) -> None:
        self.count, self.tasks, self.haystacks, self.seed = count, tasks, haystacks, seed
        self.min_tokens, self.max_tokens = min_tokens, max_tokens
        self.epoch = 0

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        task = self.tasks[int(rng.integers(len(self.tasks)))]
        length = int(rng.integers(self.min_tokens, self.max_tokens + 1))
        sample = make_sample(
            task,
            length,
            float(rng.uniform()),
            seed=self.seed * 1000 + self.epoch,
            index=i,
            haystack=self.haystacks[int(rng.integers(len(self.haystacks)))],
        )
        question, answers = training_state(sample, rng)
        enc = encode(sample.text, question)
        return {
            "doc": torch.from_numpy(enc.doc),
            "question": torch.from_numpy(enc.question),
            "labels": torch.from_numpy(token_labels(sample, enc, answers)),
        }


def collate(items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    def pad(key: str, value: float = 0) -> tuple[Tensor, Tensor]:
        seqs = [x[key] for x in items]
        width = max(len(s) for s in seqs)
        out = torch.full((len(seqs), width), value, dtype=seqs[0].dtype)
        mask = torch.zeros(len(seqs), width, dtype=torch.bool)
        for i, s in enumerate(seqs):
            out[i, : len(s)], mask[i, : len(s)] = s, True
        return out, mask

    doc, doc_mask = pad("doc")
    question, q_mask = pad("question")
    labels, _ = pad("labels")
    return {
        "doc": doc,
        "doc_mask": doc_mask,
        "question": question,
        "q_mask": q_mask,
        "labels": labels,
    }


class _EpochSetter(L.Callback):
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loader = trainer.train_dataloader
        dataset = getattr(loader, "dataset", None)
        if isinstance(dataset, NeedleExamples):
            dataset.epoch = trainer.current_epoch


class NeedleReadingData(SourceDataModule):
    """Generated long-context tasks for the trainable readers (fresh samples every epoch;
    validation and test fixed by their own seeds). ``tasks`` are needle task names."""

    def __init__(
        self,
        tasks: tuple[str, ...] = ("passkey", "variable_tracking"),
        train: int = 2000,
        val: int = 100,
        test: int = 100,
        min_tokens: int = 512,
        max_tokens: int = 4096,
        haystacks: tuple[str, ...] = ("filler", "words"),
        seed: int = 0,
        batch_size: int = 4,
    ) -> None:
        super().__init__(format="generated", seed=seed, batch_size=batch_size)
        from longmm.reading.synth.needles import TASKS

        for t in tasks:
            if t not in TASKS:
                raise DataError("data.tasks", f"unknown needle task {t!r}")
        if not 256 <= min_tokens <= max_tokens:
            raise DataError("data.min_tokens", f"need 256 <= {min_tokens} <= {max_tokens}")
        if min(train, val, test) < 1:
            raise DataError("data", f"train/val/test counts must be >= 1, got {train}/{val}/{test}")
        self.tasks, self.haystacks = list(tasks), list(haystacks)
        self.counts = {"train": train, "val": val, "test": test}
        self.min_tokens, self.max_tokens = min_tokens, max_tokens

    def read_source(self) -> SourceData:
        return SourceData(splits={}, classes=[], description=self._description())

    def _description(self) -> str:
        return (
            f"generated {', '.join(self.tasks)} documents of {self.min_tokens}-{self.max_tokens}"
            f" tokens in {', '.join(self.haystacks)} haystacks"
        )

    @property
    def classes(self) -> list[str]:  # type: ignore[override]
        return []

    def setup(self, stage: str | None = None) -> None:
        if not self.datasets:
            self.datasets = {
                name: NeedleExamples(
                    n,
                    self.tasks,
                    self.min_tokens,
                    self.max_tokens,
                    self.haystacks,
                    self.seed * 10 + k + 1,
                )
                for k, (name, n) in enumerate(self.counts.items())
            }

    def _loader(self, ds: Dataset, batch_size: int, sampler: Any = None) -> DataLoader:
        return DataLoader(ds, batch_size=batch_size, collate_fn=collate)

    def summary(self) -> dict[str, Any]:
        return {
            "source": "generated (longmm.reading.synth.needles)",
            "description": self._description(),
            "splits": {k: {"count": v} for k, v in self.counts.items()},
        }

    def preprocessing_state(self) -> dict[str, Any]:
        return {"tokenizer": "all-MiniLM-L6-v2 WordPiece"}

    def state_dict(self) -> dict[str, Any]:
        return {"preprocessing": json.dumps(self.preprocessing_state())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


# -- the task -----------------------------------------------------------------------------------
class ReadNeedles(Task):
    """Trains a reader (``reader``: ``"attention"``, ``"hierarchical"`` or ``"memory"`` with
    its ``reader_args``; ``init_from``: a reader file to start from) to tag answer tokens:
    binary cross-entropy per token, positives weighted by ``pos_weight`` (answers are a few
    tokens in thousands); the hierarchical
    reader adds its chunk-relevance loss. Reports token F1 and ``exact``: the share of samples
    whose tagged tokens are exactly the answer tokens."""

    monitor = "val/exact"
    monitor_mode = "max"

    def __init__(
        self,
        reader: str = "attention",
        reader_args: dict[str, Any] | None = None,
        pos_weight: float = 10.0,
        init_from: str | None = None,
        optimizer: OptimizerName = "adamw",
        lr: float = 2e-3,
        weight_decay: float = 0.01,
        momentum: float = 0.9,
        scheduler: SchedulerName = "cosine",
        warmup_epochs: float = 0.2,
        step_epochs: int = 10,
        gamma: float = 0.1,
    ) -> None:
        super().__init__(
            optimizer=optimizer,
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            scheduler=scheduler,
            warmup_epochs=warmup_epochs,
            step_epochs=step_epochs,
            gamma=gamma,
        )
        if reader not in READERS:
            raise DataError(
                "model.reader", f"unknown reader {reader!r}; choose from {list(READERS)}"
            )
        self.save_hyperparameters(logger=False)
        self.reader_name = reader
        self.reader_args = {"vocab_size": vocab_size(), **(reader_args or {})}
        self.reader = READERS[reader](**self.reader_args)
        if init_from:  # continue from a reader file of the same architecture
            start, _ = load_reader(init_from)
            self.reader.load_state_dict(start.state_dict())
        self.pos_weight = pos_weight
        self.eval_results: dict[str, dict[str, Any]] = {}
        self._counts: dict[str, list[float]] = {}

    def configure_callbacks(self) -> list[L.Callback]:
        return [_EpochSetter()]

    def _loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        logits = self.reader(batch["doc"], batch["doc_mask"], batch["question"], batch["q_mask"])
        mask = batch["doc_mask"]
        weight = torch.where(batch["labels"] > 0, self.pos_weight, 1.0)[mask]
        loss = F.binary_cross_entropy_with_logits(
            logits[mask], batch["labels"][mask], weight=weight
        )
        if (
            isinstance(self.reader, HierarchicalReader)
            and self.reader.last_chunk_logits is not None
        ):
            chunk = self.reader.last_chunk_logits
            target = self.reader.chunk_targets(batch["labels"] * mask)
            loss = loss + F.binary_cross_entropy_with_logits(chunk, target, pos_weight=None)
        return loss, logits

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss, _ = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["doc"]))
        return loss

    def _eval(self, batch: dict[str, Tensor], stage: str) -> None:
        loss, logits = self._loss(batch)
        sums = self._counts.setdefault(stage, [0.0] * 5)  # tp, fp, fn, exact, n
        for i in range(len(logits)):
            m = batch["doc_mask"][i]
            pred = logits[i][m] > math.log(self.pos_weight)  # even odds under the weighting
            gold = batch["labels"][i][m] > 0
            sums[0] += float((pred & gold).sum())
            sums[1] += float((pred & ~gold).sum())
            sums[2] += float((~pred & gold).sum())
            sums[3] += float(torch.equal(pred, gold))
            sums[4] += 1
        self.log(f"{stage}/loss", loss, batch_size=len(logits))

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval(batch, "test")

    def _finish(self, stage: str) -> None:
        tp, fp, fn, exact, n = self._counts.pop(stage, [0.0] * 5)
        f1 = 2 * tp / max(2 * tp + fp + fn, 1)
        results = {"token_f1": round(f1, 4), "exact": round(exact / max(n, 1), 4)}
        self.eval_results[stage] = results
        self.log(f"{stage}/exact", results["exact"])
        self.log(f"{stage}/token_f1", results["token_f1"])

    def on_validation_epoch_end(self) -> None:
        self._finish("val")

    def on_test_epoch_end(self) -> None:
        self._finish("test")

    def write_artifacts(self, run: Path) -> list[str]:
        threshold = math.log(self.pos_weight)  # p = 0.5 under the weighted loss
        save_reader(
            self.reader, self.reader_name, self.reader_args, run / "reader.safetensors", threshold
        )
        return []


def export_checkpoint(ckpt: str | Path, out: str | Path) -> None:
    """``reader.safetensors`` from a :class:`ReadNeedles` Lightning checkpoint (for a run
    stopped before it wrote one)."""
    from longmm.runs import read_checkpoint

    data = read_checkpoint(ckpt)
    hp = data.get("hyper_parameters", {})
    if hp.get("reader") not in READERS:
        raise CheckpointError(f"{ckpt}: not a ReadNeedles checkpoint (no 'reader' hyperparameter)")
    args = {"vocab_size": vocab_size(), **(hp.get("reader_args") or {})}
    reader = READERS[hp["reader"]](**args)
    state = {
        k[len("reader.") :]: v for k, v in data["state_dict"].items() if k.startswith("reader.")
    }
    reader.load_state_dict(state)
    threshold = math.log(float(hp.get("pos_weight", 1.0)))
    save_reader(reader, hp["reader"], args, Path(out), threshold)


def main(argv: list[str] | None = None) -> None:
    """``python -m longmm.reading.trained READER_FILE TASK LENGTH[,LENGTH] SAMPLES [OUT.json]``:
    recall, precision and exact match of a trained reader;
    ``python -m longmm.reading.trained export CKPT OUT``: reader file from a checkpoint."""
    import sys

    from longmm.io import atomic_write_json

    args = sys.argv[1:] if argv is None else argv
    if len(args) == 3 and args[0] == "export":  # ... export CKPT OUT
        export_checkpoint(args[1], args[2])
        return
    if len(args) < 4:
        raise SystemExit(main.__doc__)
    solver = TrainedReader.from_file(args[0])
    rows = [evaluate(solver, args[1], int(n), int(args[3])) for n in args[2].split(",")]
    for row in rows:
        print(json.dumps(row))
    if len(args) > 4:
        atomic_write_json(args[4], {"reader": args[0], "rows": rows})


if __name__ == "__main__":
    main()

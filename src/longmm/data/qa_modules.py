"""Lightning data modules over real QA data (:mod:`longmm.data.qa`): re-ranking groups for the
cross-encoder and tokenized question/passage windows for the extractive answer model.

Both tokenize with the model's own fast tokenizer (the packaged MiniLM's by default) and
pad each batch only to its longest row; training batches are drawn from length buckets
(rows of similar length together, the buckets in random order), which on a CPU saves
about a third of the work compared with random batches.
"""

from __future__ import annotations

import functools
import json
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from longmm.data.datamodule import SourceDataModule
from longmm.data.qa import (
    FILES,
    SQUAD,
    QAExample,
    RerankQuery,
    passage_window,
    qa_root,
    read_sources,
    read_squad,
    read_triples,
    split_by_document,
    subsample,
)
from longmm.data.schema import SourceData
from longmm.errors import DataError
from longmm.io import atomic_write_json
from longmm.reading.pairs import QAWindow, encode_pairs, pair_tokenizer, qa_windows, window_rows

DEFAULT_ROOT = "../shared/data/qa_train"


def pad_rows(rows: Sequence[Sequence[int]], value: int = 0) -> Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


class LengthBuckets(Sampler[list[int]]):
    """Batches of indices of similar length: shuffled, cut into pools of ``pool`` batches,
    each pool sorted by length and cut into batches, the batches in random order."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, pool: int = 50):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.pool = pool
        self.epoch = 0

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(f"{self.seed}:{self.epoch}")
        self.epoch += 1
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        size = self.batch_size * self.pool
        batches = []
        for p in range(0, len(order), size):
            chunk = sorted(order[p : p + size], key=lambda i: self.lengths[i])
            batches += [
                chunk[b : b + self.batch_size] for b in range(0, len(chunk), self.batch_size)
            ]
        rng.shuffle(batches)
        return iter(batches)

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)


class QADataModule(SourceDataModule):
    """What both QA data modules share: the data folder, the tokenizer, split sizes, loaders,
    the run folder's ``data.json``. No classes: the tasks read spans and rankings."""

    def __init__(
        self,
        root: str = DEFAULT_ROOT,
        tokenizer: str | None = None,
        train_limit: int | None = None,
        val_limit: int | None = 400,
        test_limit: int | None = None,
        val_docs: int = 4,
        seed: int = 0,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
    ) -> None:
        super().__init__(
            root=root,
            format="qa_train",
            seed=seed,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
        )
        self.tokenizer_path = tokenizer
        self.limits = {"train": train_limit, "val": val_limit, "test": test_limit}
        self.val_docs = val_docs

    @property
    def folder(self) -> Path:
        return qa_root(self.root)

    @property
    def tokenizer(self):
        return pair_tokenizer(self.tokenizer_path)

    def limit(self, splits: dict[str, list[Any]]) -> dict[str, list[Any]]:
        return {
            name: subsample(items, self.limits[name], self.seed + k)
            for k, (name, items) in enumerate(splits.items())
        }

    def squad_titles(self) -> list[str]:
        return sorted({ex.doc for ex in read_squad(self.folder / FILES[SQUAD], SQUAD)})

    def train_dataloader(self) -> DataLoader:
        ds = self.datasets["train"]
        sampler = LengthBuckets(ds.lengths, self.batch_size, self.seed)
        return DataLoader(ds, batch_sampler=sampler, collate_fn=ds.collate)

    def _eval_loader(self, name: str) -> DataLoader:
        ds = self.datasets[name]
        return DataLoader(ds, batch_size=self.eval_batch_size, collate_fn=ds.collate)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def read_source(self) -> SourceData:
        return SourceData(
            splits={}, classes=[], description=f"question answering data in {self.root}"
        )

    @property
    def classes(self) -> list[str]:  # type: ignore[override]
        return []

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def summary(self) -> dict[str, Any]:
        return {"source": str(self.root), "splits": self.split_counts()}

    def preprocessing_state(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer_path or "minilm"}

    def state_dict(self) -> dict[str, Any]:
        return {"preprocessing": json.dumps(self.preprocessing_state())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def split_items(self) -> dict[str, list[Any]]:
        """The questions of each split (each with a ``source``)."""
        raise NotImplementedError

    def split_counts(self) -> dict[str, Any]:
        return {
            name: {"count": len(items), "by_source": dict(Counter(i.source for i in items))}
            for name, items in self.split_items().items()
        }

    def save_artifacts(self, run_dir: Path) -> None:
        atomic_write_json(Path(run_dir) / "data.json", self.summary())


# -- re-ranking ------------------------------------------------------------------------------
@dataclass
class RerankGroup:
    """A question with its candidates, the positive first: token ids per candidate."""

    source: str
    rows: list[list[int]]  # [CLS] question [SEP] passage [SEP]
    types: list[list[int]]


class RerankGroups(Dataset):
    def __init__(self, groups: list[RerankGroup]) -> None:
        self.groups = groups
        self.lengths = [max(len(r) for r in g.rows) * len(g.rows) for g in groups]

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> RerankGroup:
        return self.groups[i]

    @staticmethod
    def collate(groups: list[RerankGroup]) -> dict[str, Any]:
        """``input_ids``/``token_type_ids``/``attention_mask`` ``(B * G, L)`` with every group
        padded to ``G`` candidates; ``candidates (B, G)`` True where a candidate is real."""
        width = max(len(g.rows) for g in groups)
        rows, types, real = [], [], []
        for g in groups:
            pad = width - len(g.rows)
            rows += g.rows + [g.rows[-1]] * pad
            types += g.types + [g.types[-1]] * pad
            real.append([True] * len(g.rows) + [False] * pad)
        ids = pad_rows(rows)
        return {
            "input_ids": ids,
            "token_type_ids": pad_rows(types),
            "attention_mask": (pad_rows([[1] * len(r) for r in rows])).long(),
            "candidates": torch.tensor(real),
            "sources": [g.source for g in groups],
        }


class RerankData(QADataModule):
    """Re-ranking groups from the ``qa_train`` triples: a question, a window of the passage
    that answers it (``window_words`` words around the answer) and windows of its hard
    negatives (BM25's best passages of the same document that hold no answer string).

    Training uses ``negatives`` hard negatives per question (drawn per question with the
    seed); validation and test use all of them (up to 7). ``sources`` are the training
    sources; the test split is always the held-out SQuAD articles and COVID-QA.
    """

    def __init__(
        self,
        root: str = DEFAULT_ROOT,
        sources: list[str] | None = None,
        negatives: int = 3,
        window_words: int = 60,
        max_length: int = 128,
        val_limit: int | None = 300,
        test_limit: int | None = 600,
        batch_size: int = 8,
        **common: Any,
    ) -> None:
        super().__init__(
            root, val_limit=val_limit, test_limit=test_limit, batch_size=batch_size, **common
        )
        self.sources = list(sources or [SQUAD, "policyqa_devtest", "evidence_inference_v2"])
        unknown = [s for s in self.sources if s not in FILES]
        if unknown:
            raise DataError("data.sources", f"unknown sources {unknown} (known: {sorted(FILES)})")
        if negatives < 1:
            raise DataError("data.negatives", f"must be at least 1, got {negatives}")
        self.negatives = negatives
        self.window_words = window_words
        self.max_length = max_length

    @functools.cached_property
    def queries(self) -> dict[str, list[RerankQuery]]:
        queries, self.passages = read_triples(self.folder)
        titles = sorted({q.doc for q in queries if q.source == SQUAD})
        splits = split_by_document(queries, self.val_docs, self.seed, titles)
        splits["train"] = [q for q in splits["train"] if q.source in self.sources]
        splits["val"] = [q for q in splits["val"] if q.source in self.sources]
        # Test: the held-out sets, each capped alone so that neither crowds out the other.
        test = {}
        for q in splits["test"]:
            test.setdefault(q.source, []).append(q)
        limit = self.limits["test"]
        splits["test"] = [
            q for k, s in enumerate(sorted(test)) for q in subsample(test[s], limit, self.seed + k)
        ]
        return {**self.limit({k: splits[k] for k in ("train", "val")}), "test": splits["test"]}

    def group(self, q: RerankQuery, split: str, rng: random.Random) -> RerankGroup:
        negs = list(q.negatives)
        if split == "train":
            negs = rng.sample(negs, min(self.negatives, len(negs)))
        words = self.window_words
        if split == "train":  # chunk sizes vary: so do the windows
            words = rng.randint(max(8, words // 2), words * 3 // 2)
        answer = next((a for a in q.answers if a in self.passages[q.positive]), None)
        texts = [passage_window(self.passages[q.positive], words, rng, answer)]
        texts += [passage_window(self.passages[p], words, rng) for p in negs]
        rows, types = encode_pairs(self.tokenizer, q.question, texts, self.max_length)
        return RerankGroup(q.source, rows, types)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        for k, (name, qs) in enumerate(self.queries.items()):
            rng = random.Random(f"{self.seed}:{k}")
            self.datasets[name] = RerankGroups([self.group(q, name, rng) for q in qs])
            if not len(self.datasets[name]):
                raise DataError(str(self.root), f"split {name!r} is empty")

    def split_items(self) -> dict[str, list[Any]]:
        return self.queries

    def summary(self) -> dict[str, Any]:
        return {
            **super().summary(),
            "task": "re-ranking",
            "negatives_train": self.negatives,
            "window_words": self.window_words,
            "max_length": self.max_length,
        }


# -- extractive QA ---------------------------------------------------------------------------
class QAWindows(Dataset):
    def __init__(self, examples: list[QAExample], windows: list[QAWindow]) -> None:
        self.examples = examples
        self.windows = windows
        self.lengths = [len(w.ids) for w in windows]

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> tuple[int, QAWindow]:
        return i, self.windows[i]

    @staticmethod
    def collate(items: list[tuple[int, QAWindow]]) -> dict[str, Tensor]:
        ids = pad_rows([w.ids for _, w in items])
        return {
            "input_ids": ids,
            "token_type_ids": pad_rows([w.types for _, w in items]),
            "attention_mask": pad_rows([[1] * len(w.ids) for _, w in items]),
            "start": torch.tensor([w.start for _, w in items]),
            "end": torch.tensor([w.end for _, w in items]),
            "window": torch.tensor([i for i, _ in items]),
        }


class QAData(QADataModule):
    """Extractive QA in the SQuAD 2.0 style from ``qa_train``: questions with their context
    (answerable or not), read in windows of ``max_length`` tokens that overlap by ``stride``.

    ``sources``: the training sources (SQuAD's non-held-out articles, PolicyQA, and Evidence
    Inference if asked for). Validation: SQuAD's validation articles and ``val_docs`` documents
    of each other source. Test: the held-out SQuAD articles. Counts are questions.

    ``facts``: that many generated fact questions (pass keys, codes, dates, names, ... of
    :mod:`longmm.reading.synth.facts`, a fifth without their answer, haystacks of up to
    ``facts_words`` words, half of them real prose from ``facts_prose`` when given) join the
    training split (source ``facts``), so that the model also reads the kind of planted fact
    the needle benchmarks ask about. They never enter validation or test.
    """

    def __init__(
        self,
        root: str = DEFAULT_ROOT,
        sources: list[str] | None = None,
        max_length: int = 256,
        stride: int = 96,
        val_limit: int | None = 500,
        facts: int = 0,
        facts_words: int = 150,
        facts_prose: list[str] | None = None,
        **common: Any,
    ) -> None:
        super().__init__(root, val_limit=val_limit, **common)
        if facts < 0 or facts_words < 10:
            raise DataError("data.facts", f"need facts >= 0 and facts_words >= 10, got {facts}")
        self.facts = facts
        self.facts_words = facts_words
        self.facts_prose = list(facts_prose or [])
        self.sources = list(sources or [SQUAD, "policyqa_devtest"])
        if "covidqa" in self.sources:
            raise DataError("data.sources", "COVID-QA is held out: it cannot be a training source")
        if stride >= max_length // 2:
            raise DataError("data.stride", f"must be under half of max_length, got {stride}")
        self.max_length = max_length
        self.stride = stride

    @functools.cached_property
    def examples(self) -> dict[str, list[QAExample]]:
        pool = read_sources(
            self.folder, self.sources if SQUAD in self.sources else [*self.sources, SQUAD]
        )
        titles = sorted({ex.doc for ex in pool if ex.source == SQUAD})
        splits = split_by_document(pool, self.val_docs, self.seed, titles)
        splits["train"] = [ex for ex in splits["train"] if ex.source in self.sources]
        splits["test"] = [ex for ex in splits["test"] if ex.source == SQUAD]
        splits = self.limit(splits)
        if self.facts:
            splits["train"] = splits["train"] + self.fact_examples()
        return splits

    def fact_examples(self) -> list[QAExample]:
        """The generated fact questions of the training split (see the class doc)."""
        from longmm.reading.synth.facts import load_prose, make_span_examples

        prose = load_prose(self.facts_prose) if self.facts_prose else None
        out = []
        for i, x in enumerate(make_span_examples(self.facts, self.seed, self.facts_words, prose)):
            answers = () if x.answer is None else ((x.passage[slice(*x.answer)], x.answer[0]),)
            out.append(
                QAExample(f"facts-{i}", "facts", f"facts-{i}", x.question, x.passage, answers)
            )
        return out

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        tok = self.tokenizer
        for name, examples in self.examples.items():
            windows: list[QAWindow] = []
            for i, ex in enumerate(examples):
                encs = qa_windows(tok, ex.question, ex.context, self.max_length, self.stride)
                windows += window_rows(i, encs, ex.answers)
            if not windows:
                raise DataError(str(self.root), f"split {name!r} is empty")
            self.datasets[name] = QAWindows(examples, windows)

    def split_items(self) -> dict[str, list[Any]]:
        return self.examples

    def split_counts(self) -> dict[str, Any]:
        counts = super().split_counts()
        for name, exs in self.examples.items():
            counts[name]["unanswerable"] = sum(ex.impossible for ex in exs)
        return counts

    def summary(self) -> dict[str, Any]:
        return {
            **super().summary(),
            "task": "extractive question answering",
            "max_length": self.max_length,
            "stride": self.stride,
        }

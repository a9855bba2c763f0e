"""The span head's training data: generated fact questions
(:mod:`longmm.reading.synth.facts`) with the frozen MiniLM features of their windows,
computed once in ``setup`` (the encoder is frozen, so the epochs train only the head; see
:class:`~longmm.tasks.span_head.SpanExtraction`)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from longmm.data.datamodule import SourceDataModule
from longmm.data.schema import SourceData
from longmm.errors import DataError
from longmm.reading.answer.span_head import Window, collate_spans, encode_windows, make_windows
from longmm.reading.synth.facts import FAMILIES, SpanExample, load_prose, make_span_examples


def _token_targets(window: Window, answer: tuple[int, int] | None) -> tuple[int, int]:
    """Start/end token indices (in the window) of ``answer``; (0, 0) at [CLS] if absent."""
    if answer is None:
        return 0, 0
    a, b = answer
    inside = [k for k, (s, e) in enumerate(window.offsets) if s < b and e > a]
    if not inside:
        return 0, 0
    return window.passage_at + inside[0], window.passage_at + inside[-1]


def _answer_window(example: SpanExample, max_length: int) -> Window:
    """The first window that holds the whole answer (the first window when there is none):
    a passage longer than one window must not turn its answer into "no answer"."""
    windows = make_windows(example.question, example.passage, max_length)
    if example.answer is not None:
        a, b = example.answer
        for w in windows:
            if w.offsets and w.offsets[0][0] <= a and b <= w.offsets[-1][1]:
                return w
    return windows[0]


class SpanFeatures(Dataset):
    """Precomputed frozen features, token types, and start/end targets of examples."""

    def __init__(self, examples: Sequence[SpanExample], max_length: int) -> None:
        windows = [_answer_window(x, max_length) for x in examples]
        self.features = [f.half() for f in encode_windows(windows)]
        self.type_ids = [torch.tensor(w.roles) for w in windows]
        targets = [_token_targets(w, x.answer) for w, x in zip(windows, examples, strict=True)]
        self.targets = torch.tensor(targets, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {
            "features": self.features[i],
            "type_ids": self.type_ids[i],
            "start": self.targets[i, 0],
            "end": self.targets[i, 1],
        }


class SpanData(SourceDataModule):
    """Generated span-extraction examples with frozen MiniLM features (computed in ``setup``).

    ``train``/``val``/``test`` examples come from three different seeds; ``max_words`` is the
    longest haystack around the facts, ``max_length`` the encoder window in tokens. ``prose``:
    text files or folders of real prose (see :func:`load_prose`) for half the haystacks, so
    that the head meets facts inside real sentences, not only inside generated ones."""

    def __init__(
        self,
        train: int = 3000,
        val: int = 300,
        test: int = 300,
        max_words: int = 90,
        max_length: int = 192,
        prose: list[str] | None = None,
        seed: int = 0,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
    ) -> None:
        super().__init__(format="generated", seed=seed, batch_size=batch_size)
        self.eval_batch_size = eval_batch_size or batch_size
        if min(train, val, test) < 1:
            raise DataError("data", f"train/val/test counts must be >= 1, got {train}/{val}/{test}")
        self.counts = {"train": train, "val": val, "test": test}
        self.max_words = max_words
        self.max_length = max_length
        self.prose_paths = list(prose or [])

    @functools.cached_property
    def prose(self) -> list[str]:
        return load_prose(self.prose_paths) if self.prose_paths else []

    def read_source(self) -> SourceData:
        return SourceData(splits={}, classes=[], description=self._description())

    def _description(self) -> str:
        return (
            "generated span-extraction questions over "
            f"{len(FAMILIES)} fact families ({', '.join(FAMILIES)}), with distractors and "
            "20% passages without the answer"
            + (
                f"; haystacks half real prose from {', '.join(self.prose_paths)}"
                if self.prose_paths
                else ""
            )
        )

    @property
    def classes(self) -> list[str]:  # type: ignore[override]
        return []

    @functools.cached_property
    def examples(self) -> dict[str, list[SpanExample]]:
        return {
            name: make_span_examples(n, self.seed * 3 + k, self.max_words, self.prose)
            for k, (name, n) in enumerate(self.counts.items())
        }

    def setup(self, stage: str | None = None) -> None:
        if not self.datasets:
            self.datasets = {
                name: SpanFeatures(ex, self.max_length) for name, ex in self.examples.items()
            }

    def collate_fn(self) -> Callable[[list[Any]], Any]:
        return collate_spans

    def summary(self) -> dict[str, Any]:
        answered = {
            name: round(sum(x.answer is not None for x in ex) / len(ex), 3)
            for name, ex in self.examples.items()
        }
        return {
            "source": "generated",
            "description": self._description(),
            "splits": {name: {"count": len(ex)} for name, ex in self.examples.items()},
            "with_answer": answered,
            "max_length": self.max_length,
            "prose_sentences": len(self.prose),
        }

    def preprocessing_state(self) -> dict[str, Any]:
        return {"encoder": "minilm", "max_length": self.max_length}

    def state_dict(self) -> dict[str, Any]:
        return {"preprocessing": json.dumps(self.preprocessing_state())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

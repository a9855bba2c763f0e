"""The span head at inference: windows over a passage, the best span, whole words, and
weight files."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from longmm.errors import DataError
from longmm.reading.answer.span_head import _whole_words, best_span, load_span_head, make_windows


def test_windows_overlap_and_cover_a_long_passage() -> None:
    passage = " ".join(f"word{i}" for i in range(400))
    windows = make_windows("Which word comes last?", passage, max_length=64, stride=16)
    assert len(windows) > 5
    assert all(len(w.ids) <= 64 for w in windows)
    assert windows[0].offsets[0][0] == 0 and windows[-1].offsets[-1][1] == len(passage)
    for w1, w2 in itertools.pairwise(windows):
        assert w2.offsets[0][0] < w1.offsets[-1][1]  # overlapping


def test_best_span_obeys_order_and_length() -> None:
    start = torch.tensor([1.0, -10, 5, 0, 0, 0])  # position 0 is [CLS], "no answer"
    end = torch.tensor([-1.0, 9, 0, 0, 0, 4])
    i, j, margin = best_span(start, end, passage_at=1, n_passage=5, max_tokens=3)
    # The end scoring 9 lies before the best start, and (1, 4) is 4 tokens long: neither may win.
    assert (i, j) == (1, 1) and margin == pytest.approx(5.0)


def test_whole_words() -> None:
    text = "The pass key is 1234567. Remember"
    assert _whole_words(text, 16, 19) == (16, 23)
    assert _whole_words(text, 0, 3) == (0, 3)


def test_missing_or_foreign_weights(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_span_head(tmp_path / "nope.safetensors")
    from longmm.runs import save_weights

    save_weights({"w": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(DataError, match="not a span head"):
        load_span_head(tmp_path / "other.safetensors")


def test_best_span_stays_inside_one_sentence() -> None:
    # [CLS] then five passage tokens; the best pair runs from token 1 to token 3 ...
    start = torch.tensor([0.0, 5.0, 0.0, 0.0, 0.0, 0.0])
    end = torch.tensor([0.0, 0.0, 0.0, 4.0, 1.0, 0.0])
    assert best_span(start, end, passage_at=1, n_passage=5, max_tokens=5)[:2] == (0, 2)
    # ... but tokens 0-1 and 2-4 are two sentences: the span must end in the first.
    i, j, margin = best_span(start, end, 1, 5, 5, sentence=[0, 0, 1, 1, 1])
    assert (i, j) == (0, 0) and margin == 5.0

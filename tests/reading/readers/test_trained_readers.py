"""The trainable readers on tiny configs: targets, extraction, a few training steps, shipping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from longmm.errors import CheckpointError, DataError
from longmm.reading.readers import READERS
from longmm.reading.readers import trained_reader as R
from longmm.reading.synth.needles import make_sample
from longmm.reading.trained import (
    NeedleReadingData,
    ReadNeedles,
    collate,
    token_labels,
    training_state,
)

TINY = {
    "attention": {"dim": 32, "layers": 2, "heads": 2, "block": 16},
    "hierarchical": {"dim": 32, "heads": 2, "chunk": 32, "choose": 2},
    "memory": {"dim": 32, "heads": 2, "layers": 2, "segment": 48, "memory": 4},
}


def _batch(samples):
    rng = np.random.default_rng(0)
    items = []
    for s in samples:
        question, answers = training_state(s, rng)
        enc = R.encode(s.text, question)
        items.append(
            {
                "doc": torch.from_numpy(enc.doc),
                "question": torch.from_numpy(enc.question),
                "labels": torch.from_numpy(token_labels(s, enc, answers)),
            }
        )
    return collate(items)


def test_labels_mark_the_answer_in_the_needle_and_extract_reads_it_back():
    s = make_sample("passkey", 600, 0.4, seed=3)
    enc = R.encode(s.text, s.question)
    labels = token_labels(s, enc, list(s.answers))
    assert labels.sum() >= 2  # the key is said twice in the needle
    a, b = s.needle_spans[0]
    inside = (enc.offsets[:, 0] >= a) & (enc.offsets[:, 1] <= b)
    assert labels[~inside].sum() == 0
    assert R.extract(s.text, enc.offsets, labels * 2 - 1) == [s.answers[0]]


def test_variable_tracking_states_target_one_step_past_the_known_names():
    s = make_sample("variable_tracking", 800, 0.2, seed=1)
    rng = np.random.default_rng(5)
    for _ in range(5):
        question, answers = training_state(s, rng)
        known = len(answers) - 1
        assert list(s.answers[: known + 1]) == answers
        for name in s.answers[:known]:
            assert name in question
        enc = R.encode(s.text, question)
        found = R.extract(s.text, enc.offsets, token_labels(s, enc, answers) * 2 - 1)
        assert sorted(found) == sorted(answers)


@pytest.mark.parametrize("name", list(READERS))
def test_each_reader_learns_a_tiny_batch(name: str):
    torch.manual_seed(0)
    task = ReadNeedles(reader=name, reader_args=TINY[name], lr=3e-3)
    samples = [make_sample("passkey", 300, d, seed=2, index=i) for i, d in enumerate((0.2, 0.8))]
    batch = _batch(samples)
    opt = torch.optim.AdamW(task.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss, logits = task._loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert logits.shape == batch["doc"].shape
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("name", list(READERS))
def test_reader_file_round_trip_and_solver(tmp_path, name: str):
    torch.manual_seed(0)
    reader = READERS[name](vocab_size=R.vocab_size(), **TINY[name]).eval()
    path = tmp_path / "reader.safetensors"
    R.save_reader(reader, name, {"vocab_size": R.vocab_size(), **TINY[name]}, path)
    loaded, threshold = R.load_reader(path)
    assert threshold == 0.0
    s = make_sample("passkey", 400, 0.5, seed=4)
    solver_a, solver_b = R.TrainedReader(reader, bf16=False), R.TrainedReader(loaded, bf16=False)
    _, la = solver_a.scores(s.text, s.question)
    _, lb = solver_b.scores(s.text, s.question)
    assert np.allclose(la, lb, atol=0.05)  # float16 storage
    assert isinstance(solver_b(s), str)


def test_attention_reader_inference_path_equals_training_path():
    torch.manual_seed(0)
    reader = READERS["attention"](vocab_size=R.vocab_size(), **TINY["attention"]).eval()
    batch = _batch([make_sample("passkey", 500, 0.3, seed=5)])
    args = (batch["doc"], batch["doc_mask"], batch["question"], batch["q_mask"])
    grad_path = reader(*args)
    with torch.no_grad():
        framed = reader(*args)
    assert torch.allclose(grad_path, framed, atol=1e-4)


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(DataError, match="empty"):
        R.encode("   ", "What?")
    with pytest.raises(CheckpointError, match="not found"):
        R.load_reader(tmp_path / "none.safetensors")
    with pytest.raises(DataError, match="unknown reader"):
        ReadNeedles(reader="magic")
    with pytest.raises(DataError, match="unknown needle task"):
        NeedleReadingData(tasks=("riddles",))


def test_strict_scores_punish_naming_everything():
    answers = ("AAAAA", "BBBBB")
    assert R.strict_scores("AAAAA BBBBB", answers) == {
        "recall": 1.0,
        "precision": 1.0,
        "exact": 1.0,
    }
    loose = R.strict_scores("AAAAA BBBBB CCCCC DDDDD", answers)
    assert loose["recall"] == 1.0 and loose["precision"] == 0.5 and loose["exact"] == 0.0


def test_missing_trained_reader_names_its_recipe(tmp_path, monkeypatch):
    monkeypatch.setenv(R.READERS_DIR_ENV, str(tmp_path))
    with pytest.raises(DataError, match="recipes/reader_memory.yaml"):
        R.memory_solver()

"""BiRNNEncoder: shapes, every pooling, padding invariance, clear errors, and Program 2's
recipe through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from longmm.cli import main
from longmm.encoders.text import BiRNNEncoder
from longmm.errors import DataError

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
POOLINGS = ("last", "max", "mean", "attention")


def batch(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (B, L) and their mask."""
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = True
    return ids, mask


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize(("cell", "bidirectional"), [("lstm", True), ("gru", False)])
def test_shapes(pooling: str, cell: str, bidirectional: bool) -> None:
    enc = BiRNNEncoder(
        30, embed_dim=8, hidden=12, layers=2, cell=cell, bidirectional=bidirectional,
        pooling=pooling,
    )  # fmt: skip
    ids, mask = batch([[3, 4, 5, 6, 7], [8, 9]])
    out = enc(ids, mask)
    dim = 24 if bidirectional else 12
    assert enc.dim == dim
    assert out.tokens.shape == (2, 5, dim) and out.pooled.shape == (2, dim)
    assert torch.equal(out.mask, mask)
    assert (out.tokens[1, 2:] == 0).all()  # padded positions hold nothing
    out.pooled.sum().backward()
    assert enc.embed.weight.grad is not None


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_padding_does_not_change_a_sentence(pooling: str, cell: str) -> None:
    torch.manual_seed(0)
    enc = BiRNNEncoder(50, embed_dim=16, hidden=24, layers=2, cell=cell, pooling=pooling).eval()
    sentence = [5, 17, 9, 33]
    alone = enc(*batch([sentence]))
    padded = enc(*batch([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], sentence, [7]]))
    assert torch.allclose(alone.pooled[0], padded.pooled[1], atol=1e-5)
    assert torch.allclose(alone.tokens[0], padded.tokens[1, :4], atol=1e-5)


def test_poolings_differ_and_last_reads_both_directions() -> None:
    torch.manual_seed(0)
    ids, mask = batch([[3, 4, 5], [6, 7]])
    pooled = {}
    for pooling in POOLINGS:
        torch.manual_seed(0)
        enc = BiRNNEncoder(20, embed_dim=8, hidden=6, pooling=pooling, dropout=0.0)
        out = enc(ids, mask)
        pooled[pooling] = out.pooled
        real = out.tokens[1, :2]  # (2, D) the second row's real positions
        if pooling == "max":
            assert torch.allclose(out.pooled[1], real.max(dim=0).values)
        if pooling == "mean":
            assert torch.allclose(out.pooled[1], real.mean(dim=0), atol=1e-6)
        if pooling == "last":
            # Forward state at the last real token; backward state at the first token.
            assert torch.allclose(out.pooled[1, :6], real[-1, :6], atol=1e-6)
            assert torch.allclose(out.pooled[1, 6:], real[0, 6:], atol=1e-6)
    assert not torch.allclose(pooled["max"], pooled["mean"])


def test_empty_row_gives_zeros_and_mask_defaults_to_non_pad() -> None:
    enc = BiRNNEncoder(20, embed_dim=8, hidden=6).eval()
    ids, mask = batch([[3, 4], [5]])
    mask[1] = False
    out = enc(ids, mask)
    assert (out.pooled[1] == 0).all() and torch.isfinite(out.pooled).all()
    assert torch.equal(enc(ids).mask, ids != 0)


def test_ids_past_the_vocabulary_are_a_clear_error() -> None:
    enc = BiRNNEncoder(10, embed_dim=4, hidden=4)
    with pytest.raises(DataError, match=r"token id 12 .* 10 rows; set the encoder's vocab_size"):
        enc(*batch([[1, 12, 3]]))


def test_left_padding_is_refused() -> None:
    enc = BiRNNEncoder(10, embed_dim=4, hidden=4)
    ids, _ = batch([[1, 2, 3]])
    with pytest.raises(ValueError, match="prefix"):
        enc(ids, torch.tensor([[False, True, True]]))


def test_rnn_sentiment_recipe_fits_in_two_steps(tmp_path: Path) -> None:
    out = tmp_path / "run"
    main(
        [
            "fit",
            "--config",
            str(RECIPES / "rnn_sentiment.yaml"),
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_train_batches",
            "2",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.enable_model_summary",
            "false",
            "--out",
            str(out),
        ]
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["count"] == 400 and metrics["val"]["count"] == 400
    data = json.loads((out / "data.json").read_text())
    assert data["classes"] == ["negative", "positive"]
    assert data["preprocessing"]["vocab_size"] <= 1000  # the recipe's encoder table size
    assert (out / "tokenizer.json").is_file() and (out / "checkpoints/best.safetensors").is_file()


SST2 = Path(__file__).resolve().parents[3] / "shared" / "data" / "sst2"


@pytest.mark.slow
@pytest.mark.skipif(not SST2.is_dir(), reason=f"{SST2} is missing")
def test_rnn_sst2_recipe_runs_on_real_data(tmp_path: Path) -> None:
    out = tmp_path / "run"
    main(
        [
            "fit",
            "--config",
            str(RECIPES / "rnn_sst2.yaml"),
            "--data.root",
            str(SST2),
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_train_batches",
            "20",
            "--trainer.enable_progress_bar",
            "false",
            "--out",
            str(out),
        ]
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["count"] == 872 and metrics["val"]["count"] == 6735
    assert json.loads((out / "data.json").read_text())["preprocessing"]["vocab_size"] <= 16000

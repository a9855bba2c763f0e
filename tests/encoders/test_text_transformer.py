"""TransformerTextEncoder: the EncoderOutput contract, every pooling, padding invariance,
word order, empty rows and clear errors."""

from __future__ import annotations

import pytest
import torch

from longmm.encoders import TransformerTextEncoder
from longmm.errors import DataError

POOLINGS = ("mean", "max", "cls", "attention")


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
def test_forward_backward(pooling: str) -> None:
    enc = TransformerTextEncoder(30, dim=16, layers=2, heads=2, pooling=pooling)
    ids, mask = batch([[3, 4, 5, 6, 7], [8, 9]])
    out = enc(ids, mask)
    assert enc.dim == 16
    assert out.tokens.shape == (2, 5, 16) and out.pooled.shape == (2, 16)
    assert torch.equal(out.mask, mask)
    assert (out.tokens[1, 2:] == 0).all()  # padded positions hold nothing
    out.pooled.sum().backward()
    grads = [p.grad for p in enc.parameters() if p.requires_grad]
    assert all(g is not None and g.isfinite().all() for g in grads)
    assert enc.embed.weight.grad[9].abs().sum() > 0


@pytest.mark.parametrize("pooling", POOLINGS)
def test_padding_does_not_change_a_sentence(pooling: str) -> None:
    torch.manual_seed(0)
    enc = TransformerTextEncoder(50, dim=32, layers=2, heads=4, pooling=pooling).eval()
    sentence = [5, 17, 9, 33]
    alone = enc(*batch([sentence]))
    padded = enc(*batch([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], sentence, [7]]))
    assert torch.allclose(alone.pooled[0], padded.pooled[1], atol=1e-5)
    assert torch.allclose(alone.tokens[0], padded.tokens[1, :4], atol=1e-5)
    # Whatever sits in the padded positions is never read.
    ids, mask = batch([sentence, [1, 2, 3, 4, 5, 6]])
    ids[0, 4:] = torch.tensor([11, 12])
    assert torch.allclose(enc(ids, mask).pooled[0], alone.pooled[0], atol=1e-5)


def test_positions_make_word_order_matter() -> None:
    torch.manual_seed(0)
    enc = TransformerTextEncoder(50, dim=32, layers=1, heads=4, pooling="mean").eval()
    a = enc(*batch([[5, 17, 9, 33]])).pooled
    b = enc(*batch([[33, 9, 17, 5]])).pooled
    assert not torch.allclose(a, b, atol=1e-4)


def test_empty_row_gives_zeros_and_mask_defaults_to_non_pad() -> None:
    enc = TransformerTextEncoder(20, dim=16, heads=2, pooling="cls").eval()
    ids = torch.tensor([[3, 4, 0], [0, 0, 0]])
    out = enc(ids)
    assert out.mask.tolist() == [[True, True, False], [False, False, False]]
    assert out.pooled.isfinite().all() and (out.pooled[1] == 0).all()
    assert (out.tokens[1] == 0).all()


def test_bad_inputs_and_arguments_are_named() -> None:
    enc = TransformerTextEncoder(10, dim=16, heads=2, max_length=4)
    with pytest.raises(DataError, match="vocab_size"):
        enc(torch.tensor([[1, 12]]))
    with pytest.raises(ValueError, match="max_length=4"):
        enc(torch.ones(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="prefix"):
        enc(torch.tensor([[0, 3]]), torch.tensor([[False, True]]))
    with pytest.raises(ValueError, match="heads"):
        TransformerTextEncoder(10, dim=30, heads=4)
    with pytest.raises(ValueError, match="pooling"):
        TransformerTextEncoder(10, dim=16, heads=2, pooling="last")  # type: ignore[arg-type]

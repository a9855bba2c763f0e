"""Audio encoders: shapes, gradients, masks derived by the striding, padding-invariance."""

from __future__ import annotations

import math

import pytest
import torch

from longmm.encoders import AudioCNN, AudioTransformer

N_MELS = 40


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spin-waits on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "cnn":
        return AudioCNN(n_mels=N_MELS, dim=16, channels=[4, 8, 8], dropout=0.1)
    return AudioTransformer(n_mels=N_MELS, dim=16, layers=2, heads=2, patch_frames=4)


def expected_tokens(kind: str, frames: int) -> int:
    if kind == "cnn":
        for _ in range(3):
            frames = math.ceil(frames / 2)
        return frames
    return math.ceil(frames / 4)


@pytest.mark.parametrize("kind", ["cnn", "transformer"])
def test_forward_backward(kind: str) -> None:
    enc = tiny(kind).train()
    feats = torch.randn(3, N_MELS, 30)
    mask = torch.ones(3, 30, dtype=torch.bool)
    mask[1, 17:] = False
    out = enc(feats, mask)
    n = expected_tokens(kind, 30)
    assert (
        out.tokens.shape == (3, n, 16) and out.mask.shape == (3, n) and out.pooled.shape == (3, 16)
    )
    assert out.mask.dtype == torch.bool
    assert out.mask.sum(1).tolist() == [n, expected_tokens(kind, 17), n]
    (out.pooled.sum() + out.tokens.square().mean()).backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("kind", ["cnn", "transformer"])
@pytest.mark.parametrize("length", [1, 5, 8, 13])
def test_padding_does_not_change_a_clip(kind: str, length: int) -> None:
    enc = tiny(kind).eval()
    torch.manual_seed(1)
    long = torch.randn(1, N_MELS, 21)
    clip = torch.randn(1, N_MELS, length)
    batch = torch.cat([long, torch.cat([clip, torch.full((1, N_MELS, 21 - length), 7.0)], 2)])
    mask = torch.zeros(2, 21, dtype=torch.bool)
    mask[0] = True
    mask[1, :length] = True
    with torch.no_grad():
        alone = enc(clip, torch.ones(1, length, dtype=torch.bool))
        padded = enc(batch, mask)
    n = alone.tokens.shape[1]
    assert int(padded.mask[1].sum()) == n and bool(padded.mask[1, :n].all())
    torch.testing.assert_close(padded.pooled[1], alone.pooled[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(padded.tokens[1, :n], alone.tokens[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["cnn", "transformer"])
def test_a_missing_clip_is_masked_and_finite(kind: str) -> None:
    enc = tiny(kind).eval()
    feats = torch.randn(2, N_MELS, 12)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[0] = False
    out = enc(feats, mask)
    assert not out.mask[0].any() and out.mask[1].all()
    assert torch.isfinite(out.tokens).all() and torch.isfinite(out.pooled).all()
    assert torch.equal(out.pooled[0], torch.zeros(16))


@pytest.mark.parametrize("kind", ["cnn", "transformer"])
def test_no_mask_means_all_frames_are_real(kind: str) -> None:
    enc = tiny(kind).eval()
    feats = torch.randn(2, N_MELS, 9)
    a = enc(feats)
    b = enc(feats, torch.ones(2, 9, dtype=torch.bool))
    assert a.mask.all()
    torch.testing.assert_close(a.pooled, b.pooled)


def test_bad_inputs_are_named() -> None:
    cnn, tr = tiny("cnn"), tiny("transformer")
    with pytest.raises(ValueError, match="n_mels=40"):
        cnn(torch.randn(2, 32, 10))
    with pytest.raises(ValueError, match="mask"):
        tr(torch.randn(2, N_MELS, 10), torch.ones(2, 9, dtype=torch.bool))
    short = AudioTransformer(n_mels=N_MELS, dim=16, heads=2, max_frames=8)
    with pytest.raises(ValueError, match="max_frames=8"):
        short(torch.randn(1, N_MELS, 9))
    with pytest.raises(ValueError, match="divisible"):
        AudioTransformer(dim=10, heads=4)

"""Image CNN encoders: the EncoderOutput contract, forward/backward on tiny inputs, sizes from
8x8 digits to 32x32 colour images, and samples independent of their batch in eval mode."""

from __future__ import annotations

import pytest
import torch

from longmm.encoders import ArticleCNN, EncoderOutput, ResNetCNN


def build(kind: str, channels: int, size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "article":
        return ArticleCNN(in_channels=channels, image_size=size, dim=24)
    return ResNetCNN(in_channels=channels, image_size=size, widths=[4, 8, 16], dim=24)


@pytest.mark.parametrize("kind", ["article", "resnet"])
@pytest.mark.parametrize(("channels", "size"), [(1, 8), (1, 28), (3, 32)])
def test_forward_backward(kind: str, channels: int, size: int) -> None:
    enc = build(kind, channels, size)
    out = enc(torch.randn(3, channels, size, size))
    assert isinstance(out, EncoderOutput)
    assert out.pooled.shape == (3, 24) and enc.dim == 24
    assert out.tokens.shape[0] == 3 and out.tokens.shape[1] >= 4
    assert out.mask.shape == out.tokens.shape[:2] and out.mask.all()
    out.pooled.sum().backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in enc.parameters())


@pytest.mark.parametrize("kind", ["article", "resnet"])
def test_a_sample_does_not_depend_on_its_batch_in_eval_mode(kind: str) -> None:
    enc = build(kind, 1, 8)
    enc(torch.randn(16, 1, 8, 8))  # one training step's batch statistics
    enc.eval()
    x = torch.randn(4, 1, 8, 8)
    together = enc(x).pooled
    alone = torch.cat([enc(x[i : i + 1]).pooled for i in range(4)])
    assert torch.allclose(together, alone, atol=1e-5)

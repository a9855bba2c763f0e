"""SmallViT: patch tokens, CLS pooling, gradients, clear shape errors."""

from __future__ import annotations

import pytest
import torch

from longmm.encoders import SmallViT


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spin-waits on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_forward_backward() -> None:
    torch.manual_seed(0)
    vit = SmallViT(in_channels=1, image_size=8, patch_size=2, dim=16, layers=2, heads=2)
    out = vit(torch.randn(3, 1, 8, 8))
    assert out.tokens.shape == (3, 16, 16) and out.pooled.shape == (3, 16)
    assert out.mask.shape == (3, 16) and out.mask.dtype == torch.bool and out.mask.all()
    out.pooled.sum().backward()
    for name, p in vit.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_pooled_is_the_cls_token_and_samples_are_independent() -> None:
    torch.manual_seed(0)
    vit = SmallViT(in_channels=3, image_size=8, patch_size=4, dim=16, layers=1, heads=4).eval()
    images = torch.randn(2, 3, 8, 8)
    both = vit(images)
    one = vit(images[:1])
    torch.testing.assert_close(both.pooled[:1], one.pooled, atol=1e-5, rtol=0)
    assert not torch.allclose(both.pooled[0], both.tokens[0].mean(0))


def test_bad_sizes_are_named() -> None:
    with pytest.raises(ValueError, match="patch_size"):
        SmallViT(image_size=10, patch_size=4)
    vit = SmallViT(image_size=8, patch_size=2, dim=16, heads=2, layers=1)
    with pytest.raises(ValueError, match=r"\(B, 1, 8, 8\)"):
        vit(torch.randn(2, 1, 28, 28))

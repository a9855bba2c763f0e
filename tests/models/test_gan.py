"""DCGAN generator and discriminator: shapes for 8x8 and 28x28, the conditional path."""

from __future__ import annotations

import pytest
import torch

from longmm.models import DCGANDiscriminator, DCGANGenerator
from longmm.models.gan import MinibatchStd


@pytest.mark.parametrize("size", [8, 28])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_and_range(size: int, channels: int) -> None:
    torch.manual_seed(0)
    g = DCGANGenerator(latent_dim=16, channels=channels, image_size=size, width=8)
    d = DCGANDiscriminator(channels=channels, image_size=size, width=8)
    images = g(torch.randn(5, 16))
    assert images.shape == (5, channels, size, size)
    assert images.min() >= -1 and images.max() <= 1  # tanh
    logits = d(images)
    assert logits.shape == (5,)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("norm", ["spectral", "batch", "none"])
@pytest.mark.parametrize("minibatch_std", [True, False])
def test_discriminator_variants_train(norm: str, minibatch_std: bool) -> None:
    d = DCGANDiscriminator(image_size=8, width=8, norm=norm, minibatch_std=minibatch_std)
    logits = d(torch.randn(6, 1, 8, 8))
    logits.sum().backward()
    assert all(p.grad is not None for p in d.parameters() if p.requires_grad)


def test_conditional_label_path() -> None:
    torch.manual_seed(0)
    g = DCGANGenerator(latent_dim=16, image_size=8, width=8, num_classes=10).eval()
    d = DCGANDiscriminator(image_size=8, width=8, num_classes=10)
    z = torch.randn(4, 16)
    a = g(z, torch.tensor([0, 0, 0, 0]))
    b = g(z, torch.tensor([7, 7, 7, 7]))
    assert a.shape == (4, 1, 8, 8)
    assert not torch.allclose(a, b)  # the label changes the image
    logits_a = d(a, torch.tensor([0, 0, 0, 0]))
    logits_b = d(a, torch.tensor([7, 7, 7, 7]))
    assert logits_a.shape == (4,) and not torch.allclose(logits_a, logits_b)  # projection term
    with pytest.raises(ValueError, match="pass labels"):
        g(z)
    with pytest.raises(ValueError, match="pass labels"):
        d(a)
    plain = DCGANGenerator(latent_dim=16, image_size=8, width=8)
    with pytest.raises(ValueError, match="unconditional"):
        plain(z, torch.zeros(4, dtype=torch.long))


def test_unknown_norm_is_refused() -> None:
    with pytest.raises(ValueError, match="norm must be"):
        DCGANDiscriminator(norm="layer")


def test_image_size_must_be_a_multiple_of_4() -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        DCGANGenerator(image_size=30)
    with pytest.raises(ValueError, match="multiple of 4"):
        DCGANDiscriminator(image_size=2)


def test_minibatch_std_sees_a_collapsed_batch() -> None:
    layer = MinibatchStd(group=4)
    same = torch.randn(1, 3, 4, 4).expand(8, 3, 4, 4)
    varied = torch.randn(8, 3, 4, 4)
    out_same, out_varied = layer(same), layer(varied)
    assert out_same.shape == (8, 4, 4, 4)
    assert out_same[:, -1].abs().max() < 1e-3
    assert out_varied[:, -1].min() > 0.1
    assert layer(torch.randn(3, 2, 4, 4)).shape == (3, 3, 4, 4)  # batch not divisible by group


def test_infogan_code_head_shares_the_features() -> None:
    torch.manual_seed(0)
    g = DCGANGenerator(latent_dim=16, image_size=8, width=8, num_classes=5)  # 5 codes
    d = DCGANDiscriminator(image_size=8, width=8, info_categories=5).eval()  # fixed SN
    codes = torch.tensor([0, 1, 2, 3, 4, 0])
    images = g(torch.randn(6, 16), codes)
    logits, code_logits = d.with_code(images)
    assert logits.shape == (6,) and code_logits.shape == (6, 5)
    assert torch.equal(logits, d(images))  # forward is the real/fake logit alone
    torch.nn.functional.cross_entropy(code_logits, codes).backward()
    assert d.code_head.weight.grad is not None and d.code_head.weight.grad.abs().sum() > 0
    assert (
        d.features[0].parametrizations.weight.original.grad.abs().sum() > 0
    )  # Q's gradient reaches the shared trunk
    assert g.embed.weight.grad.abs().sum() > 0 and g.project[0].weight.grad.abs().sum() > 0
    plain = DCGANDiscriminator(image_size=8, width=8)
    assert plain.code_head is None and plain.with_code(images)[1].shape == (6, 0)
    with pytest.raises(ValueError, match="info_categories"):
        DCGANDiscriminator(image_size=8, width=8, info_categories=1)

"""The article's DCGAN, corrected, and its class-conditional variant.

What the corrected version does that naive DCGAN code often gets wrong:

- the generator ends in ``tanh`` and the real images it is compared with are scaled to
  [-1, 1] (``ImageData(normalize="symmetric")``), so both live in the same range;
- the discriminator returns a logit, not a probability; losses are computed on logits
  (``softplus``), which stays finite where ``log(sigmoid(x))`` does not;
- batch norm in the generator (not after its last layer), LeakyReLU(0.2) and strided
  convolutions in the discriminator (no pooling), with spectral norm or DCGAN's batch norm,
  and a minibatch standard deviation feature against mode collapse;
- the conditional variant feeds the label to both networks: a learned embedding joined to
  the noise in the generator, and a projection term ``<embed(y), h>`` in the discriminator
  (Miyato & Koyama, 2018);
- the InfoGAN option (Chen et al., 2016) gives the unconditional generator a categorical code
  through the same label path (the code's embedding joined to the noise: a one-hot code
  concatenated to z, with the embedding as the first linear map's code columns) and the
  discriminator a head ``Q`` that predicts the code from its shared features
  (``info_categories``); the task trains both to agree, so each code becomes a distinct mode.

Both networks are sized by ``image_size`` (a multiple of 4: 28 for MNIST, 8 for the embedded
digits): the generator starts from a ``image_size/4`` square map and doubles it twice.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

DiscriminatorNorm = Literal["spectral", "batch", "none"]


def _check_size(image_size: int) -> int:
    if image_size < 4 or image_size % 4:
        raise ValueError(f"image_size must be a multiple of 4 (8, 28, 32...), got {image_size}")
    return image_size // 4


def _check_labels(labels: Tensor | None, num_classes: int, who: str) -> None:
    if num_classes and labels is None:
        raise ValueError(f"this {who} is conditional on {num_classes} classes: pass labels")
    if not num_classes and labels is not None:
        raise ValueError(f"this {who} is unconditional: it takes no labels")


class DCGANGenerator(nn.Module):
    """Noise (and, when ``num_classes`` > 0, a label) to an image in [-1, 1].

    ``latent_dim`` noise [+ label embedding] -> linear -> ``4*width`` x s x s (s =
    ``image_size/4``) -> transposed conv to ``2*width`` x 2s -> transposed conv to
    ``width`` x 4s -> 3x3 conv to ``channels`` -> tanh. An InfoGAN generator is this one
    with ``num_classes`` = K categories: its "labels" are sampled codes, never data labels.
    """

    def __init__(
        self,
        latent_dim: int = 100,
        channels: int = 1,
        image_size: int = 28,
        width: int = 64,
        num_classes: int = 0,
        embed_dim: int = 50,
    ) -> None:
        super().__init__()
        base = _check_size(image_size)
        self.latent_dim = latent_dim
        self.channels = channels
        self.image_size = image_size
        self.num_classes = num_classes
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes else None
        in_dim = latent_dim + (embed_dim if num_classes else 0)
        self.project = nn.Sequential(
            nn.Linear(in_dim, 4 * width * base * base, bias=False),
            nn.Unflatten(1, (4 * width, base, base)),
            nn.BatchNorm2d(4 * width),
            nn.ReLU(inplace=True),
        )
        self.body = nn.Sequential(
            nn.ConvTranspose2d(4 * width, 2 * width, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, channels, 3, padding=1),
            nn.Tanh(),
        )
        _dcgan_init(self)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        _check_labels(labels, self.num_classes, "generator")
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels)], dim=1)
        return self.body(self.project(z))  # (B, channels, image_size, image_size)


class DCGANDiscriminator(nn.Module):
    """An image (and, when ``num_classes`` > 0, its label) to a real/fake logit ``(B,)``.

    Strided 4x4 convolutions ``width`` -> ``2*width`` halve the map twice, a 3x3 conv to
    ``4*width``, LeakyReLU(0.2) throughout, then a linear logit over the flattened map. The
    conditional variant adds the projection ``<embed(y), h>`` of the flattened features ``h``.
    With ``info_categories`` K > 0 an InfoGAN head ``Q`` (a linear layer on the same features
    ``h``, without spectral norm) predicts a generator's categorical code: ``with_code`` returns
    the real/fake logit and the code logits ``(B, K)`` from one pass.
    """

    def __init__(
        self,
        channels: int = 1,
        image_size: int = 28,
        width: int = 64,
        num_classes: int = 0,
        norm: DiscriminatorNorm = "spectral",
        dropout: float = 0.0,
        minibatch_std: bool = True,
        info_categories: int = 0,
    ) -> None:
        super().__init__()
        base = _check_size(image_size)
        if info_categories and info_categories < 2:
            raise ValueError(f"info_categories must be 0 (off) or >= 2, got {info_categories}")
        if norm not in ("spectral", "batch", "none"):
            raise ValueError(f"norm must be 'spectral', 'batch' or 'none', got {norm!r}")
        sn = _spectral_norm if norm == "spectral" else (lambda m: m)

        def bn(c: int) -> nn.Module:  # DCGAN: batch norm on all but the first layer
            return nn.BatchNorm2d(c) if norm == "batch" else nn.Identity()

        self.num_classes = num_classes
        extra = 1 if minibatch_std else 0
        self.features = nn.Sequential(
            sn(nn.Conv2d(channels, width, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Dropout(dropout),
            sn(nn.Conv2d(width, 2 * width, 4, stride=2, padding=1)),
            bn(2 * width),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Dropout(dropout),
            MinibatchStd() if minibatch_std else nn.Identity(),
            sn(nn.Conv2d(2 * width + extra, 4 * width, 3, padding=1)),
            bn(4 * width),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Flatten(),
        )
        feature_dim = 4 * width * base * base
        self.logit = sn(nn.Linear(feature_dim, 1))
        self.embed = sn(nn.Embedding(num_classes, feature_dim)) if num_classes else None
        self.info_categories = info_categories
        self.code_head = nn.Linear(feature_dim, info_categories) if info_categories else None
        _dcgan_init(self)

    def forward(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.with_code(images, labels)[0]  # (B,)

    def with_code(self, images: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The real/fake logit ``(B,)`` and the InfoGAN code logits ``(B, info_categories)``
        (``(B, 0)`` without a code head), sharing one pass through the features."""
        _check_labels(labels, self.num_classes, "discriminator")
        h = self.features(images)  # (B, F)
        out = self.logit(h).squeeze(1)
        if self.embed is not None:
            out = out + (self.embed(labels) * h).sum(dim=1)
        code = self.code_head(h) if self.code_head is not None else h.new_zeros(len(h), 0)
        return out, code


def gan_networks(
    latent_dim: int,
    channels: int,
    image_size: int,
    width: int,
    labels: int,
    codes: int,
    embed_dim: int = 50,
    d_norm: DiscriminatorNorm = "spectral",
    d_dropout: float = 0.0,
    minibatch_std: bool = True,
) -> tuple[DCGANGenerator, DCGANDiscriminator]:
    """A DCGAN's generator and discriminator, conditional on ``labels`` classes (0: not), or
    with an InfoGAN code of ``codes`` categories (0: none), which the generator's label path
    carries and a head of the discriminator predicts."""
    generator = DCGANGenerator(
        latent_dim=latent_dim,
        channels=channels,
        image_size=image_size,
        width=width,
        num_classes=labels or codes,
        embed_dim=embed_dim,
    )
    discriminator = DCGANDiscriminator(
        channels=channels,
        image_size=image_size,
        width=width,
        num_classes=labels,
        norm=d_norm,
        dropout=d_dropout,
        minibatch_std=minibatch_std,
        info_categories=codes,
    )
    return generator, discriminator


class MinibatchStd(nn.Module):
    """Appends one feature map: the standard deviation of the features across groups of
    ``group`` samples, averaged (Karras et al., 2018). A batch of near-identical fakes has a
    low value, so the discriminator can see a collapse that no single image shows."""

    def __init__(self, group: int = 4) -> None:
        super().__init__()
        self.group = group

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        g = min(self.group, b)
        while b % g:
            g -= 1
        y = x.reshape(g, b // g, c, h, w)  # sample i is in group i % (b // g)
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (b // g,)
        y = y.repeat(g).reshape(b, 1, 1, 1).expand(b, 1, h, w)
        return torch.cat([x, y], dim=1)


def _dcgan_init(module: nn.Module) -> None:
    """DCGAN's initialization: N(0, 0.02) weights, batch norm scales N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear | nn.Embedding):
            weight = getattr(m, "parametrizations", None)
            target = weight.weight.original if weight is not None else m.weight
            nn.init.normal_(target, 0.0, 0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)

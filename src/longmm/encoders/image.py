"""Image encoders: the article's small CNN and a residual CNN with batch norm."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from longmm.encoders.base import EncoderOutput


def _as_tokens(fmap: Tensor) -> tuple[Tensor, Tensor]:
    b, _, h, w = fmap.shape
    tokens = fmap.flatten(2).transpose(1, 2)  # (B, H*W, C)
    return tokens, torch.ones(b, h * w, dtype=torch.bool, device=fmap.device)


class ArticleCNN(nn.Module):
    """The article's network: conv32-pool-conv64-pool-conv64, then dense64.

    3x3 convolutions keep the spatial size ('same' padding) so the network fits inputs as
    small as 8x8; a pool is skipped once the map is 2 pixels wide. The dense layer's input
    size is computed from ``image_size``.
    """

    def __init__(
        self, in_channels: int = 1, image_size: int = 28, dim: int = 64, dropout: float = 0.0
    ) -> None:
        super().__init__()
        size = image_size
        pools = []
        for _ in range(2):
            pools.append(nn.MaxPool2d(2) if size >= 4 else nn.Identity())
            size = size // 2 if size >= 4 else size
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1),
            nn.ReLU(),
            pools[0],
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            pools[1],
            nn.Conv2d(64, 64, 3, padding=1),
            nn.ReLU(),
        )
        self.dense = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(64 * size * size, dim), nn.ReLU()
        )
        self.in_channels = in_channels
        self.image_size = image_size
        self.dim = dim

    def forward(self, image: Tensor) -> EncoderOutput:
        fmap = self.features(image)  # (B, 64, h, w)
        tokens, mask = _as_tokens(fmap)
        return EncoderOutput(tokens=tokens, mask=mask, pooled=self.dense(fmap))


class _ResidualBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.skip = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.skip(x))


class ResNetCNN(nn.Module):
    """A small residual CNN with batch norm: a stem, then stages that halve the map and
    widen the channels, global average pooling, dropout.

    ``widths`` sets the channels per stage; stages stop downsampling at a 2x2 map, so
    8x8 digits and 32x32 CIFAR images both fit.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        widths: list[int] | None = None,
        blocks_per_stage: int = 1,
        dim: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        widths = list(widths or [32, 64, 128])
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        c_in, size = widths[0], image_size
        for i, width in enumerate(widths):
            stride = 2 if i > 0 and size >= 4 else 1
            size = size // stride
            for j in range(blocks_per_stage):
                layers.append(_ResidualBlock(c_in, width, stride if j == 0 else 1))
                c_in = width
        self.stages = nn.Sequential(*layers)
        self.proj = nn.Conv2d(c_in, dim, 1) if c_in != dim else nn.Identity()
        self.drop = nn.Dropout(dropout)
        self.in_channels = in_channels
        self.image_size = image_size
        self.dim = dim

    def forward(self, image: Tensor) -> EncoderOutput:
        fmap = self.proj(self.stages(self.stem(image)))  # (B, dim, h, w)
        tokens, mask = _as_tokens(fmap)
        return EncoderOutput(tokens=tokens, mask=mask, pooled=self.drop(fmap.mean(dim=(2, 3))))

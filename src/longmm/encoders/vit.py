"""A small Vision Transformer: patch embedding, a CLS token, learned positions, pre-LN layers."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from longmm.encoders.base import EncoderOutput
from longmm.modules.stack import pre_norm_stack


class SmallViT(nn.Module):
    """Images ``(B, in_channels, image_size, image_size)`` cut into ``patch_size`` squares,
    each embedded linearly (a strided convolution); a CLS token and learned positions are
    added and pre-LN Transformer layers run over them.

    ``tokens`` are the patch tokens ``(B, (image_size / patch_size)**2, dim)`` after the final
    norm, all real; ``pooled`` is the CLS token.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        patch_size: int = 4,
        dim: int = 128,
        layers: int = 4,
        heads: int = 4,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(
                f"image_size={image_size} is not a multiple of patch_size={patch_size}"
            )
        if dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        self.patch = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.num_patches = (image_size // patch_size) ** 2
        self.cls = nn.Parameter(torch.zeros(dim))
        self.pos = nn.Parameter(torch.randn(1 + self.num_patches, dim) * 0.02)
        self.drop = nn.Dropout(dropout)
        self.encoder = pre_norm_stack(dim, heads, layers, dropout)
        self.norm = nn.LayerNorm(dim)
        self.in_channels = in_channels
        self.image_size = image_size
        self.patch_size = patch_size
        self.dim = dim

    def forward(self, image: Tensor) -> EncoderOutput:
        expected = (self.in_channels, self.image_size, self.image_size)
        if image.dim() != 4 or tuple(image.shape[1:]) != expected:
            raise ValueError(
                f"SmallViT expects images (B, {', '.join(map(str, expected))}), "
                f"got shape {tuple(image.shape)}"
            )
        patches = self.patch(image).flatten(2).transpose(1, 2)  # (B, N, dim)
        cls = self.cls.expand(len(image), 1, -1)
        h = self.drop(torch.cat([cls, patches], dim=1) + self.pos)
        h = self.norm(self.encoder(h))  # (B, 1 + N, dim)
        tokens = h[:, 1:]
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=image.device)
        return EncoderOutput(tokens=tokens, mask=mask, pooled=h[:, 0])

"""Audio encoders over log-mel features: a 2-D CNN and a small patch Transformer.

Both take ``features (B, n_mels, T)`` and ``mask (B, T)`` (True on real frames, as
``AudioData`` gives them) and keep time as the token axis. Padding never changes a clip's
output in eval mode: padded frames are zeroed before each convolution, so a clip in a padded
batch sees the same zeros it would see alone, and the Transformer masks padded keys.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn

from longmm.encoders.base import EncoderOutput
from longmm.modules.pooling import masked_mean
from longmm.modules.stack import pre_norm_stack


def check_features(features: Tensor, mask: Tensor | None, n_mels: int) -> Tensor:
    """The frame mask ``(B, T)`` for ``features (B, n_mels, T)``, all True when none is given."""
    if features.dim() != 3 or features.shape[1] != n_mels:
        raise ValueError(
            f"audio features must be (B, n_mels={n_mels}, T), got shape {tuple(features.shape)}"
        )
    b, _, t = features.shape
    if mask is None:
        return torch.ones(b, t, dtype=torch.bool, device=features.device)
    if mask.shape != (b, t):
        raise ValueError(f"audio mask must be (B, T) = {(b, t)}, got {tuple(mask.shape)}")
    return mask.to(torch.bool)


class _ConvBlock(nn.Module):
    """3x3 conv, batch norm, ReLU; halves both the mel and the time axis."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(c_out)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


class AudioCNN(nn.Module):
    """A 2-D CNN over (mel, time) log-mel maps with batch norm; time stays the token axis.

    Each block halves the mel and time axes (stride 2); the remaining mel bins and channels of
    each time step are projected to ``dim``, giving ``tokens (B, ~T / 2**blocks, dim)``. The
    token mask is the input mask sampled with the same stride (a token is real when the frame
    at its centre is), and ``pooled`` is the mean over real tokens only.
    """

    def __init__(
        self,
        n_mels: int = 40,
        dim: int = 128,
        channels: list[int] | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        channels = list(channels or [32, 64, 128])
        if not channels:
            raise ValueError("AudioCNN needs at least one channel width")
        widths = [1, *channels]
        self.blocks = nn.ModuleList(_ConvBlock(a, b) for a, b in itertools.pairwise(widths))
        mels = n_mels
        for _ in channels:
            mels = (mels - 1) // 2 + 1  # stride 2, kernel 3, padding 1
        self.proj = nn.Linear(channels[-1] * mels, dim)
        self.drop = nn.Dropout(dropout)
        self.n_mels = n_mels
        self.dim = dim

    def forward(self, features: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        mask = check_features(features, mask, self.n_mels)
        x = features.unsqueeze(1)  # (B, 1, n_mels, T)
        for block in self.blocks:
            # Zero what is not a real frame, so that the convolution sees what it would see
            # at the end of the clip alone (its own zero padding).
            x = block(x.masked_fill(~mask[:, None, None, :], 0.0))
            mask = mask[:, ::2]  # the frame at each output's centre
        b, c, m, t = x.shape
        tokens = self.drop(self.proj(x.permute(0, 3, 1, 2).reshape(b, t, c * m)))  # (B, t, dim)
        return EncoderOutput(tokens=tokens, mask=mask, pooled=masked_mean(tokens, mask))


class AudioTransformer(nn.Module):
    """A small audio Transformer: ``patch_frames`` consecutive frames (all mel bins) form a
    patch token, learned positions are added, and pre-LN Transformer layers attend over real
    patches only (key padding from the mask). ``pooled`` is the mean over real patches.

    A patch is real when any of its frames is; the clip's last partial patch is completed with
    zeros, as the padding frames are zeroed, so a clip gives the same output alone or padded.
    Clips longer than ``max_frames`` are an error (the positions are learned up to there).
    """

    def __init__(
        self,
        n_mels: int = 40,
        dim: int = 128,
        layers: int = 2,
        heads: int = 4,
        patch_frames: int = 4,
        dropout: float = 0.1,
        max_frames: int = 2048,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        if patch_frames < 1:
            raise ValueError(f"patch_frames must be >= 1, got {patch_frames}")
        self.embed = nn.Linear(n_mels * patch_frames, dim)
        self.max_patches = math.ceil(max_frames / patch_frames)
        self.pos = nn.Parameter(torch.randn(self.max_patches, dim) * 0.02)
        self.drop = nn.Dropout(dropout)
        self.encoder = pre_norm_stack(dim, heads, layers, dropout)
        self.norm = nn.LayerNorm(dim)
        self.n_mels = n_mels
        self.patch_frames = patch_frames
        self.max_frames = max_frames
        self.dim = dim

    def forward(self, features: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        mask = check_features(features, mask, self.n_mels)
        b, m, t = features.shape
        if t > self.max_frames:
            raise ValueError(
                f"{t} frames is longer than max_frames={self.max_frames} of AudioTransformer"
            )
        p = self.patch_frames
        extra = (-t) % p
        x = features.masked_fill(~mask[:, None, :], 0.0)
        x = nn.functional.pad(x, (0, extra))
        mask = nn.functional.pad(mask, (0, extra), value=False)
        n = (t + extra) // p
        patches = x.reshape(b, m, n, p).permute(0, 2, 1, 3).reshape(b, n, m * p)  # (B, n, m*p)
        mask = mask.reshape(b, n, p).any(dim=-1)  # (B, n)
        h = self.drop(self.embed(patches) + self.pos[:n])
        # A sample with no real patch (a missing clip) would softmax over nothing (NaN): let it
        # attend to its padding; its mask stays all False, so nothing downstream reads it.
        padding = ~mask & mask.any(dim=1, keepdim=True)
        tokens = self.norm(self.encoder(h, src_key_padding_mask=padding))
        return EncoderOutput(tokens=tokens, mask=mask, pooled=masked_mean(tokens, mask))

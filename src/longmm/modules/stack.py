"""A stack of PyTorch's own pre-LN Transformer encoder layers, as the small encoders use it."""

from __future__ import annotations

from typing import Literal

from torch import nn


def pre_norm_stack(
    dim: int,
    heads: int,
    layers: int,
    dropout: float,
    ff_dim: int | None = None,
    activation: Literal["gelu", "relu"] = "gelu",
) -> nn.TransformerEncoder:
    """``layers`` pre-LN ``nn.TransformerEncoderLayer`` (batch first, feed-forward width
    ``ff_dim``, default ``4 * dim``) in an ``nn.TransformerEncoder``. Nested tensors are off:
    callers pass a key padding mask and want the same outputs with or without padding."""
    layer = nn.TransformerEncoderLayer(
        dim,
        heads,
        dim_feedforward=ff_dim or 4 * dim,
        dropout=dropout,
        activation=activation,
        batch_first=True,
        norm_first=True,
    )
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

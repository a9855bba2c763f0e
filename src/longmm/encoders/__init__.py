"""Encoders: each maps one modality to ``EncoderOutput(tokens, mask, pooled)``."""

from longmm.encoders.base import EncoderOutput
from longmm.encoders.image import ArticleCNN, ResNetCNN

__all__ = ["ArticleCNN", "EncoderOutput", "ResNetCNN"]

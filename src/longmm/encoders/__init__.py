"""Encoders: each maps one modality to ``EncoderOutput(tokens, mask, pooled)``."""

from longmm.encoders.audio import AudioCNN, AudioTransformer
from longmm.encoders.base import EncoderOutput
from longmm.encoders.image import ArticleCNN, ResNetCNN
from longmm.encoders.vit import SmallViT

__all__ = [
    "ArticleCNN",
    "AudioCNN",
    "AudioTransformer",
    "EncoderOutput",
    "ResNetCNN",
    "SmallViT",
]

"""Encoders: each maps one modality to ``EncoderOutput(tokens, mask, pooled)``."""

from longmm.encoders.audio import AudioCNN, AudioTransformer
from longmm.encoders.base import EncoderOutput
from longmm.encoders.image import ArticleCNN, ResNetCNN
from longmm.encoders.pretrained import PretrainedImageEncoder, PretrainedTextEncoder
from longmm.encoders.text import BiRNNEncoder, TransformerTextEncoder
from longmm.encoders.vit import SmallViT

__all__ = [
    "ArticleCNN",
    "AudioCNN",
    "AudioTransformer",
    "BiRNNEncoder",
    "EncoderOutput",
    "PretrainedImageEncoder",
    "PretrainedTextEncoder",
    "ResNetCNN",
    "SmallViT",
    "TransformerTextEncoder",
]

"""longmm: multimodal models (text, image, audio) that read long documents."""

__version__ = "0.1.0"

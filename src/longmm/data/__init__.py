"""Data: sources of standard formats, embedded sets, preprocessing, data modules."""

from longmm.data.datamodule import ImageData, SourceDataModule
from longmm.data.schema import AUDIO, IMAGE, MODALITIES, TEXT, Sample, SourceData, Waveform

__all__ = [
    "AUDIO",
    "IMAGE",
    "MODALITIES",
    "TEXT",
    "ImageData",
    "Sample",
    "SourceData",
    "SourceDataModule",
    "Waveform",
]

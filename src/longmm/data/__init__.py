"""Data: sources of standard formats, embedded sets, preprocessing, data modules."""

from longmm.data.avdigits import AVDigits
from longmm.data.datamodule import ImageData, SourceDataModule
from longmm.data.modules import AudioData, TextData
from longmm.data.schema import AUDIO, IMAGE, MODALITIES, TEXT, Sample, SourceData, Waveform

__all__ = [
    "AUDIO",
    "IMAGE",
    "MODALITIES",
    "TEXT",
    "AVDigits",
    "AudioData",
    "ImageData",
    "Sample",
    "SourceData",
    "SourceDataModule",
    "TextData",
    "Waveform",
]

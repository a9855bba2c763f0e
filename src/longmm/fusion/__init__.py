"""Fusion strategies: ``dict[str, EncoderOutput]`` -> ``FusionOutput``, one file each."""

from longmm.fusion.base import Fusion, FusionOutput
from longmm.fusion.concat import ConcatFusion
from longmm.fusion.cross import CrossModalFusion
from longmm.fusion.dropout import ModalityDropout
from longmm.fusion.gated import GatedFusion
from longmm.fusion.graph import GraphFusion
from longmm.fusion.late import LateFusion
from longmm.fusion.tensor import TensorFusion
from longmm.fusion.weighted import WeightedFusion

__all__ = [
    "ConcatFusion",
    "CrossModalFusion",
    "Fusion",
    "FusionOutput",
    "GatedFusion",
    "GraphFusion",
    "LateFusion",
    "ModalityDropout",
    "TensorFusion",
    "WeightedFusion",
]

"""The fusion contract: modality-keyed encoder outputs in, one fused vector per sample out.

A modality is absent for the whole batch when its key is missing from the input dict, and
absent for one sample when that sample's ``mask`` row is all False (``ModalityDropout`` and
missing files do this). An absent modality's tokens and pooled vector are never read; each
strategy says what takes their place (a learned "missing" embedding, a weight of 0, no graph
node), and never a silent zero vector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from longmm.encoders.base import EncoderOutput
from longmm.modules.pooling import masked_mean

__all__ = [
    "Fusion",
    "FusionOutput",
    "blank_absent",
    "masked_mean",
    "masked_softmax",
    "present_or",
]


@dataclass
class FusionOutput:
    fused: Tensor  # (B, out_dim)
    weights: dict[str, Tensor] | None = None  # modality -> (B,) in [0, 1]; 0 where absent
    logits: Tensor | None = None  # (B, num_classes) when the strategy classifies by itself


def masked_softmax(scores: Tensor, present: Tensor) -> Tensor:
    """Softmax of ``scores (B, M)`` over the present modalities of each sample (``present
    (B, M)`` bool); absent ones get 0, and a sample with none present gets all zeros."""
    any_present = present.any(dim=1, keepdim=True)
    scores = scores.masked_fill(~present, float("-inf"))
    scores = torch.where(any_present, scores, torch.zeros_like(scores))
    weights = torch.softmax(scores, dim=1)
    return torch.where(present, weights, torch.zeros_like(weights))


def present_or(value: Tensor, present: Tensor, fallback: Tensor) -> Tensor:
    """``value (B, ...)`` where ``present (B,)``, else ``fallback`` (broadcast); the absent
    rows of ``value`` are not read, so NaN or garbage there does not leak (nor its gradient)."""
    shape = (-1,) + (1,) * (value.dim() - 1)
    return torch.where(present.view(shape), value, fallback.to(value.dtype).expand_as(value))


def blank_absent(value: Tensor, present: Tensor) -> Tensor:
    """``value (B, ...)`` with the rows of absent samples set to 0, for computing on before
    those rows are discarded (by ``present_or`` or a 0 weight): garbage or NaN there would
    otherwise reach the weights' gradients (0 * NaN). Never a stand-in for a missing input."""
    shape = (-1,) + (1,) * (value.dim() - 1)
    return value.masked_fill(~present.view(shape), 0.0)


class Fusion(nn.Module):
    """Base of the fusion strategies.

    Constructor arguments are hyperparameters only. The task calls :meth:`bind` once it
    knows its encoders (``dims``: modality -> pooled width; ``num_classes``), before the
    optimizer is built or a checkpoint is loaded; subclasses create their layers in
    :meth:`build`. The modality order is that of ``dims``, whatever the input dict's order.
    """

    #: True when :meth:`forward` returns ``logits`` that replace the task's own head.
    produces_logits: ClassVar[bool] = False

    def __init__(self, out_dim: int = 128, dropout: float = 0.1) -> None:
        super().__init__()
        if out_dim < 1:
            raise ValueError(f"out_dim must be >= 1, got {out_dim}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.out_dim = out_dim
        self.dropout = dropout
        self.dims: dict[str, int] = {}
        self.token_dims: dict[str, int] = {}
        self.num_classes = 0

    @property
    def modalities(self) -> list[str]:
        return list(self.dims)

    def bind(
        self, dims: dict[str, int], num_classes: int, token_dims: dict[str, int] | None = None
    ) -> None:
        """Create the layers for encoders of pooled widths ``dims`` (and token widths
        ``token_dims``, the same as ``dims`` unless given). Binding again to the same
        shapes does nothing; to other shapes, it is an error."""
        dims = {m: int(d) for m, d in dims.items()}
        token_dims = {m: int((token_dims or {}).get(m, d)) for m, d in dims.items()}
        if not dims:
            raise ValueError(f"{type(self).__name__}.bind needs at least one modality")
        for m, d in {**dims, **{f"{k} tokens": v for k, v in token_dims.items()}}.items():
            if d < 1:
                raise ValueError(f"{type(self).__name__}.bind: width of {m!r} must be >= 1")
        for m in dims:
            if not m or "." in m:
                raise ValueError(f"modality name {m!r} must be non-empty and without '.'")
        if self.dims:
            same = (self.dims, self.token_dims, self.num_classes) == (
                dims,
                token_dims,
                num_classes,
            )
            if same:
                return
            raise RuntimeError(
                f"{type(self).__name__} is already bound to {self.dims} with "
                f"{self.num_classes} classes; cannot rebind to {dims} with {num_classes}"
            )
        self.dims, self.token_dims, self.num_classes = dims, token_dims, num_classes
        self.build()

    def build(self) -> None:
        """Create the layers from ``self.dims``, ``self.token_dims``, ``self.num_classes``."""
        raise NotImplementedError

    def forward(self, inputs: dict[str, EncoderOutput]) -> FusionOutput:
        raise NotImplementedError

    # -- helpers for subclasses --------------------------------------------------------------
    def presence(self, inputs: dict[str, EncoderOutput], tokens: bool = False) -> Tensor:
        """``(B, M)`` bool, True where a sample has the modality (in ``self.dims`` order);
        checks the inputs against the bound modalities and widths."""
        name = type(self).__name__
        if not self.dims:
            raise RuntimeError(f"{name}: call bind() before forward()")
        unknown = sorted(set(inputs) - set(self.dims))
        if unknown:
            raise KeyError(
                f"{name}: modalities {unknown} are not among the bound {self.modalities}"
            )
        if not inputs:
            raise ValueError(f"{name}: no modality in the input")
        # int(): under the ONNX tracer sizes are tensors, which a set would not merge.
        sizes = {m: int(out.pooled.shape[0]) for m, out in inputs.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"{name}: modalities have different batch sizes {sizes}")
        for m, out in inputs.items():
            if out.pooled.shape[-1] != self.dims[m]:
                raise ValueError(
                    f"{name}: pooled width of {m!r} is {out.pooled.shape[-1]}, "
                    f"bound to {self.dims[m]}"
                )
            if out.mask.shape != out.tokens.shape[:2]:
                raise ValueError(
                    f"{name}: mask of {m!r} is {tuple(out.mask.shape)}, tokens are "
                    f"{tuple(out.tokens.shape)}"
                )
            if tokens and out.tokens.shape[-1] != self.token_dims[m]:
                raise ValueError(
                    f"{name}: tokens of {m!r} are {out.tokens.shape[-1]} wide, bound to "
                    f"{self.token_dims[m]} (pass token_dims to bind, or use an encoder whose "
                    f"tokens are as wide as its pooled vector)"
                )
        first = next(iter(inputs.values())).pooled
        b = first.shape[0]
        columns = [
            inputs[m].mask.to(torch.bool).any(dim=1)
            if m in inputs
            else torch.zeros(b, dtype=torch.bool, device=first.device)
            for m in self.dims
        ]
        return torch.stack(columns, dim=1)

    def weights_dict(self, weights: Tensor) -> dict[str, Tensor]:
        """``(B, M)`` -> ``{modality: (B,)}``."""
        return {m: weights[:, i] for i, m in enumerate(self.dims)}

"""Late (parallel) fusion: a classifier per modality, their logits combined."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from longmm.encoders.base import EncoderOutput
from longmm.fusion.base import Fusion, FusionOutput, blank_absent, masked_softmax, present_or


class LateFusion(Fusion):
    """A head per modality (linear, GELU, dropout to ``out_dim``, then linear to the classes);
    the logits are averaged over the modalities present in each sample (``combine="mean"``)
    or mixed by learned weights, a softmax of one learned score per modality renormalized over
    the present ones (``combine="learned"``).

    Returns ``logits`` (the task uses them in place of its own head), the per-sample
    combination ``weights``, and as ``fused`` the same mix of the heads' hidden vectors. A
    sample with no modality gets logits 0 (a uniform prediction).
    """

    produces_logits = True

    def __init__(
        self,
        out_dim: int = 128,
        dropout: float = 0.1,
        combine: Literal["mean", "learned"] = "mean",
    ) -> None:
        super().__init__(out_dim=out_dim, dropout=dropout)
        if combine not in ("mean", "learned"):
            raise ValueError(f"combine must be 'mean' or 'learned', got {combine!r}")
        self.combine = combine

    def build(self) -> None:
        self.hidden = nn.ModuleDict(
            {
                m: nn.Sequential(nn.Linear(d, self.out_dim), nn.GELU(), nn.Dropout(self.dropout))
                for m, d in self.dims.items()
            }
        )
        self.classifiers = nn.ModuleDict(
            {m: nn.Linear(self.out_dim, self.num_classes) for m in self.dims}
        )
        if self.combine == "learned":
            self.modality_scores = nn.Parameter(torch.zeros(len(self.dims)))

    def forward(self, inputs: dict[str, EncoderOutput]) -> FusionOutput:
        present = self.presence(inputs)  # (B, M)
        b = present.shape[0]  # not len(): the ONNX tracer keeps shape[0] dynamic
        if self.combine == "learned":
            scores = self.modality_scores.expand(b, -1)
        else:
            scores = present.new_zeros(present.shape, dtype=torch.float32)
        weights = masked_softmax(scores, present)  # (B, M)
        ref = next(iter(inputs.values())).pooled
        fused = ref.new_zeros(b, self.out_dim)
        logits = ref.new_zeros(b, self.num_classes)
        zero = ref.new_zeros(())
        for i, m in enumerate(self.dims):
            if m not in inputs:
                continue
            h = self.hidden[m](blank_absent(inputs[m].pooled, present[:, i]))
            w = weights[:, i : i + 1].to(h.dtype)
            fused = fused + present_or(w * h, present[:, i], zero)
            logits = logits + present_or(w * self.classifiers[m](h), present[:, i], zero)
        return FusionOutput(fused=fused, weights=self.weights_dict(weights), logits=logits)

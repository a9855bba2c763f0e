"""ONNX export of a torch model for ONNX Runtime: a parity check against torch on a probe
batch, then optional int8 dynamic quantisation. The dense encoder, the re-ranker and the
answer model run through it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from longmm.errors import LongmmError


def export_onnx(
    model,
    path: Path,
    quantize: bool,
    inputs: Sequence[str] = ("input_ids", "attention_mask"),
    outputs: Sequence[str] = ("embedding",),
    per_token: bool = False,
    tolerance: float = 1e-3,
) -> Path:
    """Export ``model(*inputs) -> outputs`` to ONNX at ``path`` (dynamic batch and length;
    ``per_token`` outputs keep the length axis) and check the fp32 export against torch on a
    probe batch (largest difference at most ``tolerance``, else an error); ``quantize`` then
    stores int8 weights (onnxruntime dynamic quantisation). Written to a temporary name and
    renamed, so a half-written model is never loaded."""
    import warnings

    import torch

    from longmm.io import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    probe = {name: torch.ones((2, 16), dtype=torch.long) for name in inputs}
    probe["input_ids"] = torch.arange(1000, 1032).view(2, 16)
    probe["attention_mask"][1, 10:] = 0
    if "token_type_ids" in probe:
        probe["token_type_ids"][:, :6] = 0
    axes = {name: {0: "batch", 1: "length"} for name in inputs}
    axes.update(
        {name: {0: "batch", 1: "length"} if per_token else {0: "batch"} for name in outputs}
    )
    with atomic_path(path) as tmp:
        fp32 = tmp.with_suffix(".fp32.onnx")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    model,
                    tuple(probe[name] for name in inputs),
                    str(fp32),
                    input_names=list(inputs),
                    output_names=list(outputs),
                    dynamic_axes=axes,
                    opset_version=17,
                    dynamo=False,
                )
            _check_parity(model, fp32, probe, inputs, tolerance)
            if quantize:
                _quantize(fp32, tmp)
            else:
                os.replace(fp32, tmp)
        except LongmmError:
            raise
        except Exception as exc:
            raise LongmmError(f"could not export the model to ONNX at {path}: {exc}") from exc
        finally:
            fp32.unlink(missing_ok=True)
    return path


def _check_parity(model, onnx_file: Path, probe, inputs: Sequence[str], tolerance: float) -> None:
    import onnxruntime as ort
    import torch

    with torch.inference_mode():
        expected = model(*(probe[name] for name in inputs))
    if isinstance(expected, torch.Tensor):
        expected = (expected,)
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    got = session.run(None, {name: probe[name].numpy() for name in inputs})
    worst = max(
        float(np.max(np.abs(np.asarray(g) - e.float().numpy())))
        for g, e in zip(got, expected, strict=True)
    )
    if not worst <= tolerance:
        raise LongmmError(
            f"the ONNX export of {type(model).__name__} differs from torch by {worst:.2e} "
            f"(> {tolerance:g}) on a probe batch; not using it"
        )


def _quantize(fp32: Path, out: Path) -> None:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    # quantize_dynamic logs advice at WARNING through the root logger (and adds a handler
    # to it): keep the user's logging as it was.
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.setLevel(level)
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)

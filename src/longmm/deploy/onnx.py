"""ONNX export of a classifier's forward on its batch dict, with a parity check in ONNX
Runtime and int8 quantization (dynamic for LSTM/Transformer/linear models, static and
calibrated for CNNs).

The exporter is PyTorch's TorchScript-based one (``dynamo=False``): it traces the forward,
so the encoders' input checks (``int(ids.max())``, mask-shape checks) and packed LSTM
sequences export as they are; ``torch.export`` refuses such data-dependent Python. Tracing
freezes Python branches, so every export is checked against eager PyTorch on real batches
of several sizes before it is accepted.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import CalibrationDataReader
from torch import Tensor, nn

from longmm.errors import LongmmError
from longmm.io import atomic_path

OPSET = 17
OUTPUT = "logits"
PARITY_TOLERANCE = 1e-4
QuantMethod = Literal["auto", "static", "dynamic"]
_RECURRENT_OPS = {"LSTM", "GRU", "RNN"}
_DYNAMIC_OPS = ["LSTM", "GRU", "MatMul", "Gemm", "Attention", "Gather"]


class ParityError(LongmmError):
    """ONNX Runtime disagrees with eager PyTorch beyond the tolerance."""


class BatchForward(nn.Module):
    """A classifier's ``forward(batch)`` on positional tensors (ONNX inputs are positional):
    input ``i`` is the batch's ``names[i]``; the output is the logits ``(B, num_classes)``."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.names = list(names)

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.model(dict(zip(self.names, inputs, strict=True)))


def dynamic_axes(batch: dict[str, Tensor], names: Sequence[str]) -> dict[str, dict[int, str]]:
    """Axis 0 of every input is the batch; a modality with a mask ``<m>_mask (B, N)`` also
    has a dynamic sequence axis ``<m>_len``: the mask's axis 1 and the modality's last axis
    (``text (B, L)``, ``audio (B, n_mels, frames)``)."""
    axes: dict[str, dict[int, str]] = {name: {0: "batch"} for name in names}
    for name in names:
        if not name.endswith("_mask"):
            continue
        modality, length = name[: -len("_mask")], f"{name[: -len('_mask')]}_len"
        axes[name][1] = length
        if modality in axes:
            x = batch[modality]
            if x.shape[-1] != batch[name].shape[1]:
                raise LongmmError(
                    f"batch: {modality} {tuple(x.shape)} and {name} {tuple(batch[name].shape)} "
                    f"disagree on the sequence length"
                )
            axes[modality][x.dim() - 1] = length
    axes[OUTPUT] = {0: "batch"}
    return axes


def export_onnx(
    model: nn.Module,
    batch: dict[str, Tensor],
    names: Sequence[str],
    path: str | Path,
    opset: int = OPSET,
) -> None:
    """Trace ``model`` on ``batch``'s ``names`` and write a checked ONNX file atomically."""
    wrapper = BatchForward(model, names).eval()
    args = tuple(batch[n] for n in names)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # The fused inference kernels of nn.MultiheadAttention / nn.TransformerEncoderLayer have
    # no ONNX form (or trace with frozen lengths): export their plain operations.
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        _trace_to_onnx(wrapper, args, names, batch, path, opset)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def _trace_to_onnx(
    wrapper: nn.Module,
    args: tuple[Tensor, ...],
    names: Sequence[str],
    batch: dict[str, Tensor],
    path: str | Path,
    opset: int,
) -> None:
    with atomic_path(path) as tmp, warnings.catch_warnings(), torch.no_grad():
        # Tracer warnings name the Python checks that tracing freezes: parity covers them.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            args,
            str(tmp),
            dynamo=False,
            input_names=list(names),
            output_names=[OUTPUT],
            dynamic_axes=dynamic_axes(batch, names),
            opset_version=opset,
            do_constant_folding=True,
        )
        onnx.checker.check_model(str(tmp), full_check=True)


def session(path: str | Path, threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def feeds(batch: dict[str, Tensor], names: Sequence[str]) -> dict[str, np.ndarray]:
    return {n: batch[n].cpu().numpy() for n in names}


@dataclass
class Parity:
    max_abs_diff: float
    batches: int
    samples: int
    shapes: list[dict[str, list[int]]]


def check_parity(
    model: nn.Module,
    sess: ort.InferenceSession,
    batches: Iterable[dict[str, Tensor]],
    names: Sequence[str],
    tolerance: float = PARITY_TOLERANCE,
    where: str = "model.onnx",
) -> Parity:
    """Max |ONNX Runtime - eager PyTorch| over ``batches`` and, to prove the dynamic batch
    axis, over a one-sample slice of the first; ``ParityError`` beyond ``tolerance``."""
    worst, count, samples, shapes = 0.0, 0, 0, []
    for i, batch in enumerate(batches):
        variants = [batch]
        if i == 0 and len(batch[names[0]]) > 1:
            variants.append({n: batch[n][:1] for n in names})
        for b in variants:
            with torch.no_grad():
                ref = model(b).float().cpu().numpy()
            try:
                out = sess.run([OUTPUT], feeds(b, names))[0]
            except Exception as err:  # onnxruntime's own Fail/InvalidArgument errors
                raise ParityError(
                    f"{where}: ONNX Runtime fails on inputs {_shapes(b, names)} "
                    f"({str(err).splitlines()[0][:300]}); the traced graph has a shape frozen "
                    f"by tracing (a Python int taken from a tensor's size)"
                ) from err
            if out.shape != ref.shape:
                raise ParityError(f"{where}: output shape {out.shape}, PyTorch gives {ref.shape}")
            diff = float(np.max(np.abs(out - ref))) if out.size else 0.0
            if not np.isfinite(diff):
                raise ParityError(f"{where}: non-finite outputs on inputs {_shapes(b, names)}")
            worst = max(worst, diff)
            count += 1
            samples += len(ref)
            shapes.append(_shapes(b, names))
            if diff > tolerance:
                raise ParityError(
                    f"{where}: ONNX Runtime differs from PyTorch by {diff:.3g} (> {tolerance:g}) "
                    f"on inputs {_shapes(b, names)}; the export is not faithful"
                )
    if count == 0:
        raise ParityError(f"{where}: no batch to check parity on")
    return Parity(worst, count, samples, shapes)


def _shapes(batch: dict[str, Tensor], names: Sequence[str]) -> dict[str, list[int]]:
    return {n: list(batch[n].shape) for n in names}


# ---- quantization -------------------------------------------------------------------------


def op_types(path: str | Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}


def choose_method(path: str | Path) -> Literal["static", "dynamic"]:
    """Static (calibrated) for convolutional models, dynamic for recurrent, attention and
    linear ones: dynamic quantization has no int8 convolution, and static activation ranges
    suit neither an LSTM's recurrence (which ONNX Runtime quantizes only dynamically) nor
    attention's input-dependent ranges."""
    ops = op_types(path)
    return "static" if "Conv" in ops and not ops & _RECURRENT_OPS else "dynamic"


class _Calibration(CalibrationDataReader):
    """ONNX Runtime's calibration reader over feeds of real inputs."""

    def __init__(self, batches: Iterable[dict[str, np.ndarray]]) -> None:
        self._it = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    method: QuantMethod = "auto",
    calibration: Iterable[dict[str, np.ndarray]] | None = None,
) -> dict[str, Any]:
    """Write an int8 model; returns what was done (method, settings, quantized op types).

    ``static``: QDQ format, int8 weights per output channel and uint8 activations whose
    ranges come from ``calibration`` feeds (real training inputs), MinMax. ``dynamic``: int8
    weights of LSTM/GRU/MatMul/Gemm/Attention/Gather (embeddings); activations quantized on
    the fly per batch; weights per output channel in both."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    chosen = choose_method(fp32_path) if method == "auto" else method
    out_path = Path(out_path)
    pre = out_path.with_name(f".{out_path.stem}.pre.onnx")
    try:
        # Shape inference and graph optimizations (BatchNorm folded into Conv) first.
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=chosen == "static")
        with atomic_path(out_path) as tmp, _quiet_root_logger():
            if chosen == "static":
                if calibration is None:
                    raise LongmmError("static quantization needs calibration inputs")
                quantize_static(
                    str(pre),
                    str(tmp),
                    _Calibration(calibration),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                )
            else:
                quantize_dynamic(
                    str(pre),
                    str(tmp),
                    weight_type=QuantType.QInt8,
                    per_channel=True,  # per-tensor costs MiniLM ~1 point on SST-2
                    op_types_to_quantize=_DYNAMIC_OPS,
                )
    finally:
        pre.unlink(missing_ok=True)
        Path(f"{pre}.data").unlink(missing_ok=True)
    graph = onnx.load(str(out_path), load_external_data=False).graph
    counts = Counter(
        n.op_type
        for n in graph.node
        if "quant" in n.op_type.lower() or n.op_type.endswith("Integer")
    )
    return {
        "method": chosen,
        "weights": "int8 per channel",
        "activations": "uint8, calibrated (MinMax)" if chosen == "static" else "dynamic",
        "quantization_ops": dict(sorted(counts.items())),
    }


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ONNX Runtime's quantizer logs per-tensor notes (1-D weights that have no channel
    axis to quantize per channel) on the root logger; they say nothing to a user."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
        for handler in root.handlers[:]:  # the quantizer may add its own handler
            if handler not in handlers:
                root.removeHandler(handler)


# ---- timing -------------------------------------------------------------------------------


def time_engines(
    engines: dict[str, Callable[[dict[str, Tensor]], np.ndarray]],
    batches: list[dict[str, Tensor]],
    repeats: int = 3,
) -> dict[str, dict[str, Any]]:
    """Run every engine over the same ``batches`` ``repeats`` times, interleaved (so a
    neighbour's load hits them alike); logits from the first pass, times of every pass."""
    results: dict[str, dict[str, Any]] = {name: {"seconds": []} for name in engines}
    for rep in range(repeats):
        for name, run in engines.items():
            outputs = []
            t0 = time.perf_counter()
            for batch in batches:
                outputs.append(run(batch))
            results[name]["seconds"].append(time.perf_counter() - t0)
            if rep == 0:
                results[name]["logits"] = np.concatenate(outputs)
    return results


def single_sample_latency(
    engines: dict[str, Callable[[dict[str, Tensor]], np.ndarray]],
    samples: list[dict[str, Tensor]],
) -> dict[str, float]:
    """Median milliseconds per one-sample call, engines interleaved sample by sample."""
    times: dict[str, list[float]] = {name: [] for name in engines}
    for sample in samples:
        for name, run in engines.items():
            t0 = time.perf_counter()
            run(sample)
            times[name].append(time.perf_counter() - t0)
    return {name: round(1000 * float(np.median(t)), 4) for name, t in times.items()}

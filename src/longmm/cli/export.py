"""``longmm export RUN_DIR --format onnx [--quantize int8] --out DIR``: ONNX (and int8) export
with a parity check and a size/latency/accuracy report (``longmm.deploy.export``)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from longmm.deploy.export import export_run, summary_text
from longmm.deploy.onnx import OPSET, PARITY_TOLERANCE
from longmm.errors import LongmmError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="longmm export",
        description="Export a classifier run folder to ONNX (optionally int8), with a parity "
        "check in ONNX Runtime and a size/latency/accuracy report.",
    )
    p.add_argument("run", help="run folder written by `longmm fit`")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="export format (onnx)")
    p.add_argument("--quantize", choices=["int8"], default=None, help="also write an int8 model")
    p.add_argument(
        "--method",
        choices=["auto", "static", "dynamic"],
        default="auto",
        help="int8 method: auto = static (calibrated) for CNNs, dynamic for LSTM/Transformer/"
        "linear models",
    )
    p.add_argument("--out", required=True, help="export folder to write")
    p.add_argument("--data-root", default=None, help="replace the recipe's data.root")
    p.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    p.add_argument(
        "--calibration-batches",
        type=int,
        default=16,
        help="training batches for static calibration (default 16)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="intra-op threads for both torch and ONNX Runtime when timing (default 1)",
    )
    p.add_argument("--repeats", type=int, default=3, help="timed passes over the test split")
    p.add_argument(
        "--latency-samples",
        type=int,
        default=100,
        help="test samples timed one at a time (default 100; 0 skips)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=PARITY_TOLERANCE,
        help=f"max |ONNX - torch| on fp32 logits (default {PARITY_TOLERANCE:g})",
    )
    return p


def main(args: list[str]) -> None:
    opts = build_parser().parse_args(args)
    if opts.threads < 1 or opts.repeats < 1 or opts.calibration_batches < 1:
        raise LongmmError("--threads, --repeats and --calibration-batches must be >= 1")
    report = export_run(
        opts.run,
        opts.out,
        quantize=opts.quantize,
        method=opts.method,
        data_root=opts.data_root,
        opset=opts.opset,
        calibration_batches=opts.calibration_batches,
        threads=opts.threads,
        repeats=opts.repeats,
        latency_samples=opts.latency_samples,
        tolerance=opts.tolerance,
        command="longmm export " + " ".join(shlex.quote(a) for a in args),
    )
    print(summary_text(report, Path(opts.out)))

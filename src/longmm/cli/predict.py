"""``longmm predict``: with a checkpoint through LightningCLI, or with ``--engine onnx`` with an
ONNX export and no torch (``longmm predict --engine onnx EXPORT_DIR FILES``)."""

from __future__ import annotations


def onnx(args: list[str], prog: str = "longmm predict-onnx") -> None:
    """Predict with an export folder through ONNX Runtime; imports neither torch nor Lightning."""
    from longmm.deploy.runtime import main as predict_onnx

    predict_onnx(args, prog=prog)


def main(args: list[str]) -> None:
    from longmm.cli import onnx_engine_args, set_torch_defaults

    onnx_args = onnx_engine_args(args)
    if onnx_args is not None:
        onnx(onnx_args, prog="longmm predict --engine onnx")
        return
    set_torch_defaults()
    from longmm.cli.lightning import run_lightning

    run_lightning(["predict", *args])

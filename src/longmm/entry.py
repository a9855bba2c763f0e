"""The ``longmm`` console entry point.

Most commands need torch and Lightning (``longmm.cli``). Two must not pay for them:
predicting with an ONNX export (on an edge device only onnxruntime and numpy may be
installed) and ``read`` (importing Lightning costs seconds before the first page is read).
This module imports nothing heavy, runs those two itself and hands every other command to
``longmm.cli``.
"""

from __future__ import annotations

import sys


def onnx_engine_args(args: list[str]) -> list[str] | None:
    """``predict`` arguments without ``--engine onnx`` when they ask for it, else None."""
    for i, arg in enumerate(args):
        if arg == "--engine" and i + 1 < len(args) and args[i + 1] == "onnx":
            return args[:i] + args[i + 2 :]
        if arg == "--engine=onnx":
            return args[:i] + args[i + 1 :]
    return None


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    command, rest = (argv[0], argv[1:]) if argv else ("", [])
    onnx_args = onnx_engine_args(rest) if command == "predict" else None
    if command == "predict-onnx":
        onnx_args, prog = rest, "longmm predict-onnx"
    else:
        prog = "longmm predict --engine onnx"
    if onnx_args is None and command != "read":
        from longmm.cli import main as full_main

        full_main(argv)
        return

    from longmm.errors import LongmmError

    try:
        if command == "read":
            from longmm.commands.read import main as read

            read(rest)
        else:
            from longmm.deploy.runtime import main as predict_onnx

            predict_onnx(onnx_args, prog=prog)
    except LongmmError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

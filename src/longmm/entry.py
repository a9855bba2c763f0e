"""The ``longmm`` console entry point.

Most commands need torch and Lightning (``longmm.cli``). Some must not pay for them:
predicting with an ONNX export (on an edge device only onnxruntime and numpy may be
installed), ``read`` (importing Lightning costs seconds before the first page is read) and
``--help``. This module imports nothing heavy, runs those itself and hands every other
command to ``longmm.cli``.
"""

from __future__ import annotations

import os
import sys

# PyTorch's CPU builds run on GNU OpenMP, whose idle worker threads spin for a long while
# before they sleep. When other busy processes share the cores (a second fit, a test run, a
# server), the spinning threads starve them and each other: two 3-epoch cnn_digits fits side
# by side on 2 cores took 100 s with libgomp's default and 8.8 s with a spin count of 1000,
# where one alone takes 6.7 s either way. Set before torch loads; the user's own value wins.
OPENMP_DEFAULTS = {"GOMP_SPINCOUNT": "1000"}


def set_openmp_defaults() -> None:
    for key, value in OPENMP_DEFAULTS.items():
        os.environ.setdefault(key, value)


USAGE = """usage: longmm COMMAND [options]

commands:
  fit        train from a YAML recipe:  longmm fit --config recipes/cnn_digits.yaml [--out DIR]
  validate   evaluate a checkpoint on the validation split
  test       evaluate a checkpoint on the test split
  predict    predict with a checkpoint; with --engine onnx, with an export (no torch needed:
             longmm predict --engine onnx EXPORT_DIR FILES | --text T | --manifest JSONL)
  data       list embedded sets and formats, or inspect a dataset: longmm data list | inspect PATH
  generate   sample images from a trained GAN run: longmm generate --run DIR --n 64 --out grid.png
  translate  translate sentences with a trained translator run: longmm translate --run DIR "text"
  bench      benchmarks: longmm bench recipes|fusion|serve|needle|efficiency|qasper [--help]
  read       answer questions about long documents: longmm read PATH... --ask "question" [--json]
  serve      serve trained runs over HTTP, with a web page: longmm serve RUN_DIR [--port 8000]
  export     ONNX (and int8) export with parity check and report:
             longmm export RUN_DIR --format onnx [--quantize int8] --out DIR
  compress   prune and/or distil a run: longmm compress RUN_DIR [--prune 0.5] [--structured]
             [--distill-from TEACHER_RUN] --out DIR
  quickstart the main job on embedded data (about 30 s on 2 CPU cores)

Run 'longmm COMMAND --help' for a command's options.
"""


def onnx_engine_args(args: list[str]) -> list[str] | None:
    """``predict`` arguments without ``--engine onnx`` when they ask for it, else None."""
    for i, arg in enumerate(args):
        if arg == "--engine" and i + 1 < len(args) and args[i + 1] == "onnx":
            return args[:i] + args[i + 2 :]
        if arg == "--engine=onnx":
            return args[:i] + args[i + 1 :]
    return None


def main(argv: list[str] | None = None) -> None:
    set_openmp_defaults()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
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

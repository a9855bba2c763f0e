"""The ``longmm`` command: one entry point, one dispatcher, one module per command.

Each command lives in ``longmm.cli.<command>`` with a ``main(args)`` and is imported only
when it runs. Some commands must not pay for torch and Lightning: predicting with an ONNX
export (on an edge device only onnxruntime and numpy may be installed), ``read`` (importing
Lightning costs seconds before the first page is read) and ``--help``. So this module imports
nothing heavy; the training stack loads in the command modules that need it.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

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

# The commands LightningCLI runs (YAML recipes, ``--section.key value`` overrides).
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")

# command -> "module:function" taking the arguments after the command's name.
COMMANDS = {
    "fit": "longmm.cli.lightning:fit",
    "validate": "longmm.cli.lightning:validate",
    "test": "longmm.cli.lightning:test",
    "predict": "longmm.cli.predict:main",
    "data": "longmm.cli.data:main",
    "generate": "longmm.cli.generate:main",
    "translate": "longmm.cli.translate:main",
    "bench": "longmm.cli.bench:main",
    "read": "longmm.cli.read:main",
    "serve": "longmm.cli.serve:main",
    "export": "longmm.cli.export:main",
    "compress": "longmm.cli.compress:main",
    "quickstart": "longmm.cli.quickstart:main",
    "predict-onnx": "longmm.cli.predict:onnx",  # the old spelling of predict --engine onnx
}

# Commands that start without torch; the others get torch's defaults set first.
LIGHT_COMMANDS = ("read", "predict", "predict-onnx")

# The names the Lightning module used to export from the old single-module ``longmm.cli``.
_LAZY = {"run_lightning": "longmm.cli.lightning", "LongmmCLI": "longmm.cli.lightning"}


def __getattr__(name: str) -> Any:
    """``from longmm.cli import run_lightning`` without importing Lightning for ``--help``."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def set_torch_defaults() -> None:
    import torch

    torch.set_float32_matmul_precision("high")


def onnx_engine_args(args: list[str]) -> list[str] | None:
    """``predict`` arguments without ``--engine onnx`` when they ask for it, else None."""
    for i, arg in enumerate(args):
        if arg == "--engine" and i + 1 < len(args) and args[i + 1] == "onnx":
            return args[:i] + args[i + 2 :]
        if arg == "--engine=onnx":
            return args[:i] + args[i + 1 :]
    return None


def main(argv: list[str] | None = None) -> None:
    try:
        dispatch(argv)
    except BrokenPipeError:
        # Whoever read our output left (`longmm --help | head`): no traceback, and no second
        # error when Python flushes stdout at exit (the recipe of Python's signal docs).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


def dispatch(argv: list[str] | None = None) -> None:
    """Run the command ``argv`` names (default: the command line)."""
    set_openmp_defaults()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"longmm: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        sys.exit(2)
    from longmm.errors import LongmmError

    module, _, function = COMMANDS[command].partition(":")
    try:
        if command not in LIGHT_COMMANDS:
            set_torch_defaults()
        getattr(importlib.import_module(module), function)(rest)
    except LongmmError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)

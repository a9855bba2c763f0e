"""``longmm compress RUN_DIR [--prune 0.5] [--structured] [--distill-from TEACHER] --out DIR``:
prune and/or distil a classifier run (``longmm.deploy.compress``)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from longmm.deploy.compress import compress_run, summary_text
from longmm.errors import LongmmError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="longmm compress",
        description="Prune and/or distil a classifier run; writes a run folder and a report.",
    )
    p.add_argument("run", help="run folder of the model to compress (the student)")
    p.add_argument("--prune", type=float, default=None, help="share of weights to prune (0-1)")
    p.add_argument(
        "--structured",
        action="store_true",
        help="prune whole output channels/rows (L2 norm) instead of single weights",
    )
    p.add_argument("--distill-from", default=None, help="teacher run folder (same data)")
    p.add_argument("--out", required=True, help="output run folder")
    p.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs (default 3)")
    p.add_argument("--lr", type=float, default=5e-4, help="fine-tuning learning rate")
    p.add_argument("--temperature", type=float, default=4.0, help="distillation temperature")
    p.add_argument(
        "--alpha", type=float, default=0.7, help="weight of the distillation loss (default 0.7)"
    )
    p.add_argument("--data-root", default=None, help="replace the recipe's data.root")
    p.add_argument("--threads", type=int, default=1, help="torch threads when timing")
    p.add_argument("--seed", type=int, default=0, help="seed of the fine-tuning (default 0)")
    p.add_argument(
        "--limit-train-batches",
        type=int,
        default=None,
        help="train batches per epoch (default: all)",
    )
    return p


def main(args: list[str]) -> None:
    opts = build_parser().parse_args(args)
    if opts.prune is None and opts.distill_from is None:
        raise LongmmError("nothing to do: give --prune and/or --distill-from")
    if opts.epochs < 1:
        raise LongmmError(f"--epochs must be >= 1, got {opts.epochs}")
    report = compress_run(
        opts.run,
        opts.out,
        prune_amount=opts.prune,
        structured=opts.structured,
        teacher_run=opts.distill_from,
        epochs=opts.epochs,
        lr=opts.lr,
        temperature=opts.temperature,
        alpha=opts.alpha,
        data_root=opts.data_root,
        threads=opts.threads,
        limit_train_batches=opts.limit_train_batches,
        seed=opts.seed,
        command="longmm compress " + " ".join(shlex.quote(a) for a in args),
    )
    print(summary_text(report, Path(opts.out)))

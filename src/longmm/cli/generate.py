"""``longmm generate``: a grid of samples from a trained GAN run folder.

longmm generate --run runs/gan_mnist --n 64 --out grid.png
longmm generate --run runs/cgan_mnist --n 64 --label 7 --out sevens.png
longmm generate --run runs/gan_mnist --n 64 --code 3 --out code3.png
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from longmm.errors import LongmmError
from longmm.runs import read_best_checkpoint


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="longmm generate",
        description="Write a PNG grid of images sampled from a trained GAN run folder.",
    )
    parser.add_argument("--run", required=True, help="run folder of `longmm fit` with a GAN")
    parser.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    parser.add_argument(
        "--label", type=int, default=None, help="class index (conditional GANs only)"
    )
    parser.add_argument(
        "--code", type=int, default=None, help="InfoGAN code (GANs with info_categories only)"
    )
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--nrow", type=int, default=None, help="images per row")
    return parser


def main(args: list[str]) -> None:
    """Sample ``--n`` images from ``<run>/checkpoints/best.ckpt`` and write them as a grid."""
    from longmm.tasks.generate import GAN, grid_scale, save_image_grid

    parser = build_parser()
    opts = parser.parse_args(args)
    if opts.n < 1:
        parser.error(f"--n must be at least 1, got {opts.n}")
    run = Path(opts.run)
    ckpt_path, _ = read_best_checkpoint(run, "GAN")
    model = GAN.load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=True)
    model.eval()
    if opts.label is not None:
        if not model.conditional:
            raise LongmmError(
                f"{run}: this GAN is unconditional; --label needs a conditional GAN "
                f"(model.init_args.conditional: true)"
            )
        if not 0 <= opts.label < model.num_classes:
            raise LongmmError(
                f"--label {opts.label} is out of range: {run} knows classes "
                f"0..{model.num_classes - 1}"
            )
    codes = model.info_categories
    if opts.code is not None:
        if codes is None:
            raise LongmmError(
                f"{run}: this GAN has no categorical code; --code needs one trained with "
                f"model.init_args.info_categories"
            )
        if not 0 <= opts.code < codes:
            raise LongmmError(f"--code {opts.code} is out of range: {run} has codes 0..{codes - 1}")
    images = model.sample(opts.n, labels=opts.label, seed=opts.seed, code=opts.code)
    if opts.nrow:
        nrow = opts.nrow
    elif model.conditional and opts.label is None:
        nrow = model.num_classes  # one column per class
    elif codes is not None and opts.code is None:
        nrow = codes  # one column per code
    else:
        nrow = max(1, math.ceil(math.sqrt(opts.n)))
    out = save_image_grid(images, opts.out, nrow=nrow, scale=grid_scale(model.image_size))
    if opts.label is not None:
        what = f"label {opts.label}"
    elif opts.code is not None:
        what = f"code {opts.code}"
    else:
        what = "all codes" if codes is not None else "all classes"
    print(f"wrote {opts.n} samples ({what}, seed {opts.seed}) to {out}")

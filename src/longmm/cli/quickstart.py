"""``longmm quickstart``: the main job on embedded data, each quickstart recipe trained and tested,
then a long multimodal document read with the digits CNN trained first."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from longmm.cli.lightning import run_lightning
from longmm.errors import LongmmError


def recipe_path(name: str) -> Path:
    """A recipe by name: from the installed package, else from the source checkout."""
    here = Path(__file__).resolve().parents[1]  # the longmm package
    for folder in (here / "recipes", here.parents[1] / "recipes"):
        candidate = folder / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    raise LongmmError(
        f"recipe {name!r} not found in {here / 'recipes'} or {here.parents[1] / 'recipes'}"
    )


QUICKSTART = (
    ("cnn_digits", "CNN (residual, batch norm) on embedded digits"),
    ("cnn_digits_article", "CNN (the article's network) on embedded digits"),
    ("fusion_av_digits", "image + audio fusion on embedded audio-visual digits"),
)


def main(args: list[str]) -> None:
    """The main job on embedded data: each quickstart recipe trained and tested."""
    parser = argparse.ArgumentParser(
        prog="longmm quickstart", description="Train the main job on embedded data."
    )
    parser.add_argument("--out", default="runs/quickstart", help="parent folder of the runs")
    opts = parser.parse_args(args)
    t0 = time.perf_counter()
    out = Path(opts.out)
    rows = []
    for name, title in QUICKSTART:
        run_lightning(["fit", "--config", str(recipe_path(name)), "--out", str(out / name)])
        metrics = json.loads((out / name / "metrics.json").read_text())
        rows.append((title, metrics["test"]["accuracy"], metrics["seconds"], out / name))
    from longmm.reading.demo import print_reading, quickstart_reading

    # A long multimodal document read with the digits CNN trained above.
    reading = quickstart_reading(out / "reading", digits_run=out / "cnn_digits")
    print(f"\nquickstart done in {time.perf_counter() - t0:.0f} s")
    for title, accuracy, seconds, folder in rows:
        print(f"  {title:<50} test accuracy {accuracy:.4f}  ({seconds:.0f} s)  {folder}")
    print_reading(reading)

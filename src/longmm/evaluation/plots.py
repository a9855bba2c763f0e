"""Plots written into a run folder (PNG, drawn off-screen)."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from longmm.io import atomic_path


def _save(fig: plt.Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_confusion_matrix(
    matrix: list[list[int]], classes: list[str], path: Path, title: str = ""
) -> None:
    n = len(classes)
    size = max(4.0, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=90 if n > 12 else 0)
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix")
    if n <= 30:
        peak = max(max(row) for row in matrix) or 1
        for i, row in enumerate(matrix):
            for j, v in enumerate(row):
                if v:
                    color = "white" if v > peak / 2 else "black"
                    ax.text(j, i, str(v), ha="center", va="center", fontsize=8, color=color)
    _save(fig, path)


def read_epoch_metrics(csv_paths: list[Path]) -> dict[str, list[tuple[int, float]]]:
    """Per-epoch series from Lightning's CSV logs, in order (a resumed run's log overrides
    the epochs it repeats): {name: [(epoch, value), ...]}."""
    series: dict[str, dict[int, float]] = defaultdict(dict)
    rows = []
    for csv_path in csv_paths:
        with open(csv_path, newline="") as fh:
            rows += list(csv.DictReader(fh))
    for row in rows:
        epoch = row.get("epoch")
        if not epoch:
            continue
        for key, value in row.items():
            if key in ("epoch", "step") or value in ("", None):
                continue
            try:
                series[key][int(float(epoch))] = float(value)
            except ValueError:
                continue
    return {k: sorted(v.items()) for k, v in series.items()}


def plot_curves(
    csv_paths: list[Path], path: Path, metrics: tuple[str, ...] = ("loss", "accuracy")
) -> bool:
    """Train and validation curves per epoch; False when the log holds no epochs yet."""
    series = read_epoch_metrics(csv_paths)
    wanted = [m for m in metrics if f"train/{m}" in series or f"val/{m}" in series]
    if not wanted:
        return False
    fig, axes = plt.subplots(1, len(wanted), figsize=(5 * len(wanted), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], wanted, strict=True):
        for stage in ("train", "val"):
            points = series.get(f"{stage}/{metric}")
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot([x + 1 for x in xs], ys, marker="o", ms=3, label=stage)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
        if metric == "loss" and all(
            v > 0 for s in ("train", "val") for _, v in series.get(f"{s}/loss", [])
        ):
            lo = min(v for s in ("train", "val") for _, v in series.get(f"{s}/loss", []))
            if lo > 0 and math.isfinite(lo):
                ax.set_yscale("log")
    _save(fig, path)
    return True

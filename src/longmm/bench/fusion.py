"""``longmm bench fusion``: every fusion strategy and each single-modality baseline on the
noisy audio-visual digits, over several seeds, tested again with each modality missing.

Every training is its own ``longmm fit`` process and every test its own ``longmm test``
process (the commands a user types; the table prints them); the numbers are read back from
the run folders: ``metrics.json`` (test accuracy, training seconds), ``checkpoints/best.ckpt``
(parameter count) and ``missing_<modality>/metrics_test.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from longmm.bench.recipes import update_docs
from longmm.io import atomic_path, atomic_write_json

MODALITIES = ("image", "audio")
FULL_RECIPE = "recipes/fusion_av_mnist_fsdd.yaml"
QUICK_RECIPE = "recipes/fusion_av_digits.yaml"
QUICK_EPOCHS = 2
CHANCE = 0.1  # ten digits, balanced

# name -> (fusion class, extra init_args); out_dim and dropout come from the recipe's fusion.
STRATEGIES: dict[str, tuple[str, dict[str, Any]]] = {
    "concat": ("longmm.fusion.ConcatFusion", {}),
    "late": ("longmm.fusion.LateFusion", {}),
    "weighted": ("longmm.fusion.WeightedFusion", {}),
    "cross": ("longmm.fusion.CrossModalFusion", {"heads": 4, "layers": 1}),
    "gated": ("longmm.fusion.GatedFusion", {}),
    "graph": ("longmm.fusion.GraphFusion", {"heads": 4, "rounds": 2, "segments": 4}),
    "tensor": ("longmm.fusion.TensorFusion", {"rank": 4}),
}
# name -> the one modality it reads
BASELINES: dict[str, str] = {"image_only": "image", "audio_only": "audio"}

# Buffers in a Classify state dict (batch-norm statistics); everything else is a parameter.
_BUFFER_SUFFIXES = (".running_mean", ".running_var", ".num_batches_tracked")

Runner = Callable[[list[str]], subprocess.CompletedProcess]


@dataclass(frozen=True)
class Config:
    """One row of the table: a strategy (or baseline) trained from ``recipe``."""

    name: str
    kind: str  # "fusion" or "baseline"
    overrides: tuple[str, ...]  # fit arguments after the recipe
    modality: str | None = None  # the baseline's own modality


def recipe_configs(recipe: Path, names: list[str] | None = None) -> list[Config]:
    """Configs for every strategy and baseline, built from the recipe's own encoders and
    fusion settings, so that all rows share encoders, data and training schedule."""
    model = yaml.safe_load(recipe.read_text())["model"]["init_args"]
    encoders = model["encoders"]
    base = dict((model.get("fusion") or {}).get("init_args") or {})
    common = {k: base[k] for k in ("out_dim", "dropout") if k in base}
    configs = []
    for name, (class_path, extra) in STRATEGIES.items():
        fusion = {"class_path": class_path, "init_args": {**common, **extra}}
        configs.append(Config(name, "fusion", ("--model.init_args.fusion", json.dumps(fusion))))
    for name, modality in BASELINES.items():
        if modality not in encoders:
            raise ValueError(f"{recipe}: no {modality!r} encoder for the {name} baseline")
        overrides = (
            "--model.init_args.encoders",
            json.dumps({modality: encoders[modality]}),
            "--model.init_args.fusion",
            "null",
        )
        if model.get("modality_dropout"):
            # Nothing to drop with one modality (Classify refuses it without a fusion).
            overrides += ("--model.init_args.modality_dropout", "null")
        configs.append(Config(name, "baseline", overrides, modality))
    if names:
        unknown = sorted(set(names) - {c.name for c in configs})
        if unknown:
            raise ValueError(
                f"unknown strategies {unknown}; choose from {[c.name for c in configs]}"
            )
        configs = [c for c in configs if c.name in names]
    return configs


def fit_args(
    config: Config, recipe: str, run: Path, seed: int, data_root: str | None, epochs: int | None
) -> list[str]:
    args = ["fit", "--config", recipe]
    if data_root is not None:
        args += ["--data.root", data_root]
    args += ["--seed_everything", str(seed), *config.overrides]
    if epochs is not None:
        args += ["--trainer.max_epochs", str(epochs)]
    # The bench compares accuracies; integrated-gradients attribution (every fusion run's
    # report.md otherwise) would add minutes across the table.
    args += ["--model.init_args.attribution_samples", "0"]
    return [*args, "--trainer.enable_progress_bar", "false", "--out", str(run)]


def missing_args(run: Path, modality: str) -> list[str]:
    """``longmm test`` of a run's best checkpoint with ``modality`` absent from test batches."""
    return [
        "test",
        "--config",
        str(run / "config.yaml"),
        "--ckpt_path",
        str(run / "checkpoints" / "best.ckpt"),
        "--data.init_args.drop_at_test",
        f"[{modality}]",
        "--trainer.enable_progress_bar",
        "false",
        "--out",
        str(run / f"missing_{modality}"),
    ]


def command_text(args: list[str]) -> str:
    return "longmm " + " ".join(shlex.quote(a) for a in args)


def subprocess_runner(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "longmm.cli", *args], capture_output=True, text=True
    )


def count_parameters(ckpt: Path) -> int | None:
    """Parameters in a Classify checkpoint: its state dict less batch-norm statistics."""
    if not ckpt.is_file():
        return None
    from longmm.runs import read_checkpoint

    state = read_checkpoint(ckpt)["state_dict"]
    return sum(int(v.numel()) for k, v in state.items() if not k.endswith(_BUFFER_SUFFIXES))


def _failure(done: subprocess.CompletedProcess) -> str:
    tail = (done.stderr or done.stdout or "").strip().splitlines()[-3:]
    return "failed: " + " | ".join(tail)


def run_seed(
    config: Config,
    recipe: str,
    runs: Path,
    seed: int,
    data_root: str | None,
    epochs: int | None,
    runner: Runner = subprocess_runner,
) -> dict[str, Any]:
    """Fit one config with one seed, then test it with each modality missing."""
    run = runs / config.name / f"seed{seed}"
    args = fit_args(config, recipe, run, seed, data_root, epochs)
    out: dict[str, Any] = {"seed": seed, "run": str(run), "command": command_text(args)}
    t0 = time.perf_counter()
    done = runner(args)
    out["wall_seconds"] = round(time.perf_counter() - t0, 1)
    metrics_path = run / "metrics.json"
    if done.returncode != 0 or not metrics_path.is_file():
        return {**out, "status": _failure(done)}
    metrics = json.loads(metrics_path.read_text())
    out.update(
        status="ok",
        accuracy=metrics["test"]["accuracy"],
        train_seconds=metrics.get("seconds"),
        epochs=metrics.get("epochs"),
        params=count_parameters(run / "checkpoints" / "best.ckpt"),
        missing={},
    )
    for modality in MODALITIES:
        if config.modality == modality:
            # A single-modality model without its modality has no input at all: it cannot
            # predict (null); guessing would score chance, CHANCE.
            out["missing"][modality] = None
            continue
        test = missing_args(run, modality)
        done = runner(test)
        result = run / f"missing_{modality}" / "metrics_test.json"
        if done.returncode != 0 or not result.is_file():
            out["missing"][modality] = None
            out["status"] = f"missing {modality}: {_failure(done)}"
            continue
        out["missing"][modality] = json.loads(result.read_text())["accuracy"]
    return out


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 4) if values else None


def _std(values: list[float]) -> float | None:
    # Sample standard deviation over seeds; 0 for a single seed.
    if not values:
        return None
    return round(statistics.stdev(values), 4) if len(values) > 1 else 0.0


def summarize(config: Config, seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """One table row from a config's per-seed results."""
    ok = [s for s in seeds if "accuracy" in s]
    accuracies = [s["accuracy"] for s in ok]
    row: dict[str, Any] = {
        "strategy": config.name,
        "kind": config.kind,
        "accuracy_mean": _mean(accuracies),
        "accuracy_std": _std(accuracies),
        "params": next((s["params"] for s in ok if s.get("params") is not None), None),
        "train_seconds": _mean([s["train_seconds"] for s in ok if s.get("train_seconds")]),
        "missing": {},
        "missing_std": {},
        "seeds": len(seeds),
        "status": "ok"
        if all(s["status"] == "ok" for s in seeds)
        else "; ".join(f"seed {s['seed']}: {s['status']}" for s in seeds if s["status"] != "ok"),
        "runs": seeds,
    }
    for modality in MODALITIES:
        values = [s["missing"][modality] for s in ok if s["missing"].get(modality) is not None]
        row["missing"][modality] = _mean(values)
        row["missing_std"][modality] = _std(values)
    return row


def verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's checks: best fusion vs best single modality, strategies above concat."""
    fusions = [r for r in rows if r["kind"] == "fusion" and r["accuracy_mean"] is not None]
    singles = [r for r in rows if r["kind"] == "baseline" and r["accuracy_mean"] is not None]
    out: dict[str, Any] = {}
    if fusions and singles:
        best = max(fusions, key=lambda r: r["accuracy_mean"])
        single = max(singles, key=lambda r: r["accuracy_mean"])
        out["best_fusion"] = best["strategy"]
        out["best_single"] = single["strategy"]
        out["gain_points"] = round(100 * (best["accuracy_mean"] - single["accuracy_mean"]), 2)
    concat = next((r for r in fusions if r["strategy"] == "concat"), None)
    if concat is not None:
        above = [
            r["strategy"]
            for r in fusions
            if r["strategy"] != "concat" and r["accuracy_mean"] > concat["accuracy_mean"]
        ]
        out["beat_concat"] = above
    return out


def _pct(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "—"
    text = f"{100 * value:.2f}"
    return f"{text} ± {100 * std:.2f}" if std is not None else text


def markdown_table(result: dict[str, Any]) -> str:
    rows, check = result["rows"], result["verdict"]
    seeds = result["seeds"]
    lines = [
        f"### Fusion strategies on {result['data']}",
        "",
        f"Test accuracy in % (mean ± sample std over {seeds} seed{'s' if seeds > 1 else ''}); "
        "the missing columns test the same checkpoints with that modality absent from every "
        "test batch. A single-modality model without its own modality has no input: it "
        f"cannot predict (—; guessing scores chance, {100 * CHANCE:.0f} %).",
        "",
        "| strategy | accuracy | image missing | audio missing | params | training s | status |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        std = r["accuracy_std"] if seeds > 1 else None
        params = f"{r['params']:,}" if r["params"] is not None else "—"
        seconds = f"{r['train_seconds']:.1f}" if r["train_seconds"] is not None else "—"
        lines.append(
            f"| {r['strategy']} | {_pct(r['accuracy_mean'], std)} | "
            f"{_pct(r['missing']['image'])} | {_pct(r['missing']['audio'])} | {params} | "
            f"{seconds} | {r['status']} |"
        )
    lines.append("")
    if "gain_points" in check:
        lines.append(
            f"Best fusion ({check['best_fusion']}) vs best single modality "
            f"({check['best_single']}): {check['gain_points']:+.2f} points."
        )
    if "beat_concat" in check:
        above = check["beat_concat"]
        lines.append(
            f"Strategies above early concatenation: {len(above)} "
            f"({', '.join(above) if above else 'none'})."
        )
    if result.get("notes"):
        lines += ["", *result["notes"]]
    lines += [
        "",
        f"Bench: `{result['command']}` ({result['wall_seconds'] / 60:.1f} min wall, "
        f"{result.get('jobs', 1)} run(s) at a time).",
        "Each row and seed ran (the first seed shown; `--seed_everything` varies):",
        "",
        "```bash",
    ]
    for r in rows:
        first = next(iter(r["runs"]), None)
        if first is not None:
            lines.append(first["command"])
    lines += [
        "# then, for each run and each modality M in image, audio:",
        command_text(missing_args(Path("RUN"), "M")),
        "```",
        "",
    ]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """Bars per strategy: accuracy (error bars: std over seeds), image missing, audio missing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    names = [r["strategy"] for r in rows]
    x = list(range(len(rows)))
    width = 0.27

    def values(get: Callable[[dict[str, Any]], float | None]) -> list[float]:
        return [100 * (get(r) or 0.0) for r in rows]

    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(rows) + 2), 4.2))
    ax.bar(
        [i - width for i in x],
        values(lambda r: r["accuracy_mean"]),
        width,
        yerr=values(lambda r: r["accuracy_std"]),
        capsize=3,
        label="both modalities",
        color="#1f77b4",
    )
    for offset, modality, colour in ((0, "image", "#ff7f0e"), (width, "audio", "#2ca02c")):
        ax.bar(
            [i + offset for i in x],
            values(lambda r, m=modality: r["missing"][m]),
            width,
            yerr=values(lambda r, m=modality: r["missing_std"][m]),
            capsize=2,
            label=f"{modality} missing",
            color=colour,
        )
    ax.axhline(100 * CHANCE, color="grey", linestyle=":", linewidth=1, label="chance")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=30, ha="right")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"Fusion strategies, {result['data']} ({result['seeds']} seeds)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def run_fusion_bench(opts: argparse.Namespace, runner: Runner = subprocess_runner) -> dict:
    t0 = time.perf_counter()
    recipe = opts.recipe or (QUICK_RECIPE if opts.quick else FULL_RECIPE)
    seeds = opts.seeds if opts.seeds is not None else (1 if opts.quick else 3)
    epochs = opts.epochs if opts.epochs is not None else (QUICK_EPOCHS if opts.quick else None)
    data_root = None if opts.quick else opts.shared
    if data_root is not None and not Path(data_root).is_dir():
        raise SystemExit(f"longmm bench fusion: {data_root} is missing (or use --quick)")
    names = opts.only.split(",") if opts.only else None
    configs = recipe_configs(Path(recipe), names)
    runs = Path(opts.runs) / ("fusion_quick" if opts.quick else "fusion")
    jobs = getattr(opts, "jobs", 1) or 1
    if jobs < 1:
        raise SystemExit(f"longmm bench fusion: --jobs must be >= 1, got {jobs}")

    def one(task: tuple[Config, int]) -> dict[str, Any]:
        config, seed = task
        print(f"[bench fusion] {config.name} seed {seed}", flush=True)
        r = run_seed(config, recipe, runs, seed, data_root, epochs, runner)
        print(
            f"  {config.name} seed {seed} -> {r['status']} accuracy {r.get('accuracy')} "
            f"missing {r.get('missing')}",
            flush=True,
        )
        return r

    tasks = [(config, seed) for config in configs for seed in range(seeds)]
    # Each run is its own process; with jobs > 1 several run side by side (on a small CPU,
    # give each one thread: OMP_NUM_THREADS=1). Training seconds then compare rows measured
    # under the same load.
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        done = list(pool.map(one, tasks))
    rows = [
        summarize(config, [r for (c, _), r in zip(tasks, done, strict=True) if c is config])
        for config in configs
    ]
    data = (
        "embedded audio-visual digits (quick)"
        if opts.quick
        else "noisy MNIST + FSDD audio-visual digits"
    )
    argv = ["bench", "fusion", *(opts.argv or [])]
    result = {
        "quick": bool(opts.quick),
        "data": data,
        "recipe": recipe,
        "seeds": seeds,
        "epochs": epochs,
        "jobs": jobs,
        "rows": rows,
        "verdict": verdict(rows),
        "command": command_text(argv),
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    stem = "fusion_quick" if opts.quick else "fusion"
    out = Path(opts.json or Path("benchmarks/results") / f"{stem}.json")
    png = Path(opts.plot) if opts.plot else out.with_suffix(".png")
    atomic_write_json(out, result)
    plot(result, png)
    table = markdown_table(result)
    if not opts.quick and opts.docs:
        update_docs(Path(opts.docs), table, "bench:fusion")
    print(table)
    print(f"wrote {out} and {png}")
    return result

"""``longmm bench needle``: long-context accuracy by length and depth, with time and memory.

For each task, strategy and length it generates ``--samples`` documents
(:mod:`longmm.reading.synth.needles`; depths cycle over ``--depths`` levels from 0 to 100%), lets
the strategy answer each question, and scores the answer (RULER's string match: the share of
reference answers found as whole words). ``seconds`` is the mean time per document of
reading and answering (generation left out); ``peak_mib`` the peak resident memory of the
process while it did so (sampled every 10 ms).

Strategies come from a registry: the retrieval reader's ``bm25``, ``dense`` and ``hybrid``
(with the trained span head and, on multimodal documents, the packaged digit CNN) are built
in; trained readers add theirs with :func:`register_strategy`.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psutil

from longmm.errors import DataError
from longmm.io import atomic_write_json
from longmm.reading.synth.needles import TASKS, NeedleSample, make_sample, score


class NeedleSolver(Protocol):
    """Answers a needle sample's question from its document; returns the answer text."""

    def __call__(self, sample: NeedleSample) -> str: ...


@dataclass(frozen=True)
class StrategyEntry:
    build: Callable[[], NeedleSolver] | str  # or "module:function", imported when used
    description: str

    def solver(self) -> NeedleSolver:
        if isinstance(self.build, str):
            import importlib

            module, _, function = self.build.partition(":")
            return getattr(importlib.import_module(module), function)()
        return self.build()


STRATEGIES: dict[str, StrategyEntry] = {}


def register_strategy(name: str, build: Callable[[], NeedleSolver] | str, description: str) -> None:
    """Make ``name`` a ``--strategy`` of ``longmm bench needle``. ``build()`` (or the function
    that ``"module:function"`` names, imported only when the strategy runs) is called once per
    run and returns the solver: ``solver(sample) -> answer text``."""
    STRATEGIES[name] = StrategyEntry(build, description)


def _retrieval(strategy: str) -> Callable[[], NeedleSolver]:
    def build() -> NeedleSolver:
        from longmm.reading.ingest import text_document
        from longmm.reading.multimodal import write_needle_document
        from longmm.reading.pipeline import build_reader

        # The reader `longmm read` uses (its default answer mode).
        reader = build_reader(strategy=strategy)  # type: ignore[arg-type]

        def solve(sample: NeedleSample) -> str:
            if sample.attachments:
                with tempfile.TemporaryDirectory(prefix="longmm-needle-") as folder:
                    path = write_needle_document(sample, folder)
                    return reader.answer(sample.question, [path]).answer
            doc = text_document(sample.text, source=f"{sample.task}[{sample.index}]")
            return reader.answer(sample.question, [doc]).answer

        return solve

    return build


for _name in ("bm25", "dense", "hybrid"):
    register_strategy(
        _name,
        _retrieval(_name),
        f"retrieval reader ({_name}) as in longmm read: span head, sentence fallback, digit CNNs",
    )
# The trained readers (longmm.reading.readers), imported only when one runs.
for _name, _what in (
    ("attention", "efficient-attention reader (sliding windows + global question tokens)"),
    ("hierarchical", "hierarchical reader (chunks, attention over chunk summaries)"),
    ("memory", "recurrent-memory reader (segments carrying memory tokens)"),
):
    register_strategy(
        _name, f"longmm.reading.readers.trained_reader:{_name}_solver", f"trained {_what}"
    )


class PeakRSS:
    """Peak resident memory of this process (MiB) while the ``with`` block runs."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._proc = psutil.Process()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def mib(self) -> float:
        return self.peak / 2**20


def depth_levels(n: int) -> list[float]:
    return [0.5] if n == 1 else [round(i / (n - 1), 4) for i in range(n)]


def run_needles(
    tasks: list[str],
    strategies: list[str],
    lengths: list[int],
    samples: int,
    depths: int = 5,
    haystack: str = "filler",
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Rows per (task, strategy, length, depth) and a summary per (task, strategy, length)."""
    for t in tasks:
        if t not in TASKS:
            raise DataError("--task", f"unknown task {t!r}; choose from {', '.join(TASKS)}")
    for s in strategies:
        if s not in STRATEGIES:
            raise DataError("--strategy", f"unknown {s!r}; choose from {', '.join(STRATEGIES)}")
    levels = depth_levels(depths)
    rows: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    for strategy in strategies:
        solve = STRATEGIES[strategy].solver()
        for task in tasks:
            for length in lengths:
                by_depth: dict[float, list[tuple[float, float, float]]] = defaultdict(list)
                for i in range(samples):
                    depth = levels[i % len(levels)]
                    sample = make_sample(task, length, depth, seed=seed, index=i, haystack=haystack)
                    with PeakRSS() as mem:
                        t0 = time.perf_counter()
                        answer = solve(sample)
                        seconds = time.perf_counter() - t0
                    got = score(answer, sample.answers)
                    by_depth[depth].append((got, seconds, mem.mib))
                    log(
                        f"{task} {strategy} {length} depth={depth:.2f} #{i}: "
                        f"{'ok' if got == 1 else 'MISS'} ({got:.2f}) {seconds:.1f}s "
                        f"{mem.mib:.0f}MiB answer={answer[:60]!r} want={list(sample.answers)}"
                    )
                for depth in sorted(by_depth):
                    vals = by_depth[depth]
                    rows.append(_row(task, strategy, length, depth, vals))
                everything = [v for vals in by_depth.values() for v in vals]
                summary.append(_row(task, strategy, length, None, everything))
                log(
                    f"== {task} {strategy} {length}: accuracy {summary[-1]['accuracy']:.3f}, "
                    f"{summary[-1]['seconds']:.1f} s/doc, peak {summary[-1]['peak_mib']:.0f} MiB"
                )
    return {
        "rows": rows,
        "summary": summary,
        "config": {
            "tasks": tasks,
            "strategies": strategies,
            "lengths": lengths,
            "samples": samples,
            "depth_levels": levels,
            "haystack": haystack,
            "seed": seed,
            "tokens": "all-MiniLM-L6-v2 WordPiece tokens of the document text",
        },
    }


def _row(
    task: str,
    strategy: str,
    length: int,
    depth: float | None,
    vals: list[tuple[float, float, float]],
) -> dict[str, Any]:
    n = max(len(vals), 1)
    return {
        "task": task,
        "strategy": strategy,
        "length": length,
        "depth": depth,
        "accuracy": round(sum(v[0] for v in vals) / n, 4),
        "seconds": round(sum(v[1] for v in vals) / n, 3),
        "peak_mib": round(max((v[2] for v in vals), default=0.0), 1),
        "samples": len(vals),
    }


def plot_heatmaps(result: dict[str, Any], path: Path) -> None:
    """One length-by-depth accuracy heatmap per (task, strategy), side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from longmm.io import atomic_path

    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in result["rows"]:
        groups[(r["task"], r["strategy"])].append(r)
    fig, axes = plt.subplots(
        1, len(groups), figsize=(4.2 * len(groups), 3.6), squeeze=False, constrained_layout=True
    )
    for ax, ((task, strategy), rows) in zip(axes[0], groups.items(), strict=True):
        lengths = sorted({r["length"] for r in rows})
        depths = sorted({r["depth"] for r in rows})
        grid = np.full((len(depths), len(lengths)), np.nan)
        for r in rows:
            grid[depths.index(r["depth"]), lengths.index(r["length"])] = r["accuracy"]
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto", origin="upper")
        ax.set_xticks(range(len(lengths)), [_tokens(n) for n in lengths])
        ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
        ax.set_xlabel("document length (tokens)")
        ax.set_ylabel("needle depth")
        ax.set_title(f"{task} / {strategy}")
        for i in range(len(depths)):
            for j in range(len(lengths)):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="accuracy")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def plot_accuracy_vs_length(result: dict[str, Any], path: Path) -> None:
    """Accuracy against document length, one line per (task, strategy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from longmm.io import atomic_path

    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in result["summary"]:
        groups[(r["task"], r["strategy"])].append(r)
    fig, ax = plt.subplots(figsize=(6, 3.8), constrained_layout=True)
    for (task, strategy), rows in groups.items():
        rows = sorted(rows, key=lambda r: r["length"])
        ax.plot(
            [r["length"] for r in rows],
            [r["accuracy"] for r in rows],
            marker="o",
            label=f"{task} / {strategy}",
        )
    ax.set_xscale("log", base=2)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("document length (MiniLM tokens)")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _tokens(n: int) -> str:
    if n >= 2**20 and n % 2**20 == 0:
        return f"{n // 2**20}M"
    return f"{n // 1024}K" if n >= 1024 and n % 1024 == 0 else str(n)


def _ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise DataError(flag, f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise DataError(flag, "no values given")
    return values


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "needle", help="long-context needles: accuracy by length and depth, time, memory"
    )
    p.add_argument("--task", default="passkey", help=f"comma-separated: {', '.join(TASKS)}")
    p.add_argument(
        "--lengths", default="4096,65536,1048576", help="comma-separated lengths in tokens"
    )
    p.add_argument("--samples", type=int, default=20, help="documents per length")
    p.add_argument("--depths", type=int, default=5, help="depth levels from 0 to 100%%")
    p.add_argument(
        "--strategy", default="hybrid", help="comma-separated; registered: bm25, dense, hybrid, ..."
    )
    p.add_argument("--haystack", default="filler", help="filler, words, or a folder of .txt files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--json", default="benchmarks/results/needle.json", help="output JSON (plots beside it)"
    )


def run_needle_bench(opts: argparse.Namespace) -> None:
    tasks = [t.strip() for t in opts.task.split(",") if t.strip()]
    strategies = [s.strip() for s in opts.strategy.split(",") if s.strip()]
    lengths = _ints(opts.lengths, "--lengths")
    if opts.samples < 1 or opts.depths < 1:
        raise DataError("--samples/--depths", "must be at least 1")
    result = run_needles(
        tasks, strategies, lengths, opts.samples, opts.depths, opts.haystack, opts.seed
    )
    result["command"] = "longmm bench needle " + " ".join(opts.argv)
    out = Path(opts.json)
    atomic_write_json(out, result)
    heatmap = out.with_suffix(".png")
    curve = out.with_name(out.stem + "_length.png")
    plot_heatmaps(result, heatmap)
    plot_accuracy_vs_length(result, curve)
    print(f"wrote {out}, {heatmap}, {curve}")

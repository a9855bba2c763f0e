"""``longmm bench ...``: the benchmark runners of ``longmm.bench``, one subcommand each."""

from __future__ import annotations

import argparse


def main(args: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="longmm bench", description="Run a benchmark.")
    sub = parser.add_subparsers(dest="bench", required=True)
    recipes = sub.add_parser("recipes", help="the article's four programs side by side")
    recipes.add_argument("--quick", action="store_true", help="embedded data, few epochs")
    recipes.add_argument(
        "--json", default=None, help="output JSON (default under benchmarks/results)"
    )
    recipes.add_argument("--runs", default="benchmarks/runs", help="parent folder of the runs")
    recipes.add_argument("--shared", default="../shared/data", help="folder of the real data sets")
    recipes.add_argument("--only", default=None, help="comma-separated run names to run")
    recipes.add_argument(
        "--reuse",
        action="store_true",
        help="read back runs this bench already finished with the same command (go on where "
        "an interrupted bench stopped) instead of training them again",
    )
    recipes.add_argument("--docs", default="docs/results.md", help="results page to update")
    fusion = sub.add_parser(
        "fusion", help="every fusion strategy and single-modality baseline on audio-visual digits"
    )
    fusion.add_argument("--quick", action="store_true", help="embedded data, 1 seed, 2 epochs")
    fusion.add_argument(
        "--seeds", type=int, default=None, help="seeds per row (default 3; quick 1)"
    )
    fusion.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    fusion.add_argument(
        "--json", default=None, help="output JSON (default benchmarks/results/fusion.json)"
    )
    fusion.add_argument("--plot", default=None, help="bar plot PNG (default: beside the JSON)")
    fusion.add_argument("--recipe", default=None, help="base recipe (default by --quick)")
    fusion.add_argument("--runs", default="benchmarks/runs", help="parent folder of the runs")
    fusion.add_argument("--shared", default="../shared/data", help="folder of the real data sets")
    fusion.add_argument("--only", default=None, help="comma-separated strategies to run")
    fusion.add_argument("--docs", default="docs/results.md", help="results page to update")
    fusion.add_argument(
        "--jobs", type=int, default=1, help="runs at a time (each its own process; default 1)"
    )
    from longmm.bench.efficiency import add_parser as add_efficiency

    add_efficiency(sub)
    from longmm.bench.needle import add_parser as add_needle

    add_needle(sub)
    from longmm.bench.serve import add_parser as add_serve

    add_serve(sub)
    from longmm.bench.longqa import add_parser as add_longqa

    add_longqa(sub, "qasper")
    add_longqa(sub, "covidqa")
    opts = parser.parse_args(args)
    opts.argv = list(args[1:])
    if opts.bench in ("qasper", "covidqa"):
        from longmm.bench.longqa import run_bench

        run_bench(opts)
    if opts.bench == "fusion":
        from longmm.bench.fusion import run_fusion_bench

        run_fusion_bench(opts)
    if opts.bench == "efficiency":
        from longmm.bench.efficiency import run_efficiency_bench

        run_efficiency_bench(opts)
    if opts.bench == "needle":
        from longmm.bench.needle import run_needle_bench

        run_needle_bench(opts)
    if opts.bench == "serve":
        from longmm.bench.serve import run_serve_bench

        run_serve_bench(opts)
    if opts.bench == "recipes":
        from longmm.bench.recipes import run_recipes_bench

        run_recipes_bench(opts)

"""report.md: what a person reads first in a run folder."""

from __future__ import annotations

from typing import Any


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


PREFERRED = (
    "accuracy",
    "balanced_accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "f1_micro",
)


def _scalar_keys(results: list[dict[str, Any]]) -> list[str]:
    """Classification metrics first, then any other scalar a task reports (BLEU, FID...)."""
    found = [k for r in results for k, v in r.items() if isinstance(v, int | float)]
    first = [k for k in PREFERRED if k in found]
    rest = sorted({k for k in found if k not in PREFERRED and k != "count"})
    return first + rest


def run_report(
    title: str,
    metrics: dict[str, Any],
    data: dict[str, Any] | None,
    command: str,
    plots: list[str],
) -> str:
    lines = [f"# {title}", "", f"Command: `{command}`", ""]
    seconds = metrics.get("seconds")
    if seconds is not None:
        lines += [
            f"Training time: {seconds:.1f} s; "
            f"best checkpoint: `{metrics.get('best_checkpoint', '')}`",
            "",
        ]
    stages = [s for s in ("val", "test") if s in metrics]
    keys = _scalar_keys([metrics[s] for s in stages])
    if stages:
        lines += [
            "## Metrics",
            "",
            "| metric | " + " | ".join(stages) + " |",
            "| --- |" + " ---: |" * len(stages),
        ]
        for key in keys:
            lines.append(
                f"| {key} | " + " | ".join(_fmt(metrics[s].get(key, "")) for s in stages) + " |"
            )
        lines.append("")
    test = metrics.get("test", {})
    if test.get("per_class"):
        lines += [
            "## Per class (test)",
            "",
            "| class | precision | recall | f1 | support |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for name, row in test["per_class"].items():
            lines.append(
                f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} "
                f"| {row['support']} |"
            )
        lines.append("")
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    if data:
        lines += [
            "## Data",
            "",
            f"Source: {data.get('source')} — {data.get('description', '')}",
            "",
        ]
        for split, info in data.get("splits", {}).items():
            lines.append(f"- {split}: {info['count']} samples")
        lines.append("")
        skipped = data.get("skipped", [])
        lines += [f"### Skipped inputs ({len(skipped)})", ""]
        lines += [f"- {item}" for item in skipped] if skipped else ["None."]
        lines.append("")
    return "\n".join(lines)

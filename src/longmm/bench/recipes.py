"""The article's four programs side by side, plus a TF-IDF text baseline.

Each program runs as its own ``longmm fit`` process (a clean slate, the same code path a user
takes); the table is read back from each run folder's ``metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from longmm.io import atomic_write_json, atomic_write_text


@dataclass(frozen=True)
class Program:
    name: str  # run folder name
    title: str  # what the table shows
    recipe: str  # recipes/<recipe>.yaml
    data: str | None  # shared data folder name, None for embedded data
    metrics: tuple[str, ...]  # keys of metrics.json "test" shown in the table
    overrides: tuple[str, ...] = ()
    judge: str | None = None  # a run whose folder this one needs as its judge
    extra: dict[str, Any] = field(default_factory=dict)


# The GANs' judge: the CNN recipe trained plainly (label smoothing would cap its probabilities
# near the 0.9 confidence threshold and under-count confident samples).
PLAIN = ("--model.init_args.label_smoothing", "0")

FULL = (
    Program("cnn_mnist", "CNN image classifier", "cnn_mnist", "mnist", ("accuracy", "f1_macro")),
    Program(
        "judge_mnist",
        "CNN judge for the GANs (no label smoothing)",
        "cnn_mnist",
        "mnist",
        ("accuracy",),
        PLAIN,
    ),
    Program(
        "rnn_sst2", "RNN text classifier (BiLSTM)", "rnn_sst2", "sst2", ("accuracy", "f1_macro")
    ),
    Program("minilm_sst2", "MiniLM transfer", "minilm_sst2", "sst2", ("accuracy", "f1_macro")),
    Program(
        "gan_mnist",
        "GAN image generator (DCGAN with an InfoGAN code)",
        "gan_mnist",
        "mnist",
        ("confident_share", "coverage", "fid", "fid_real", "code_purity"),
        judge="judge_mnist",
    ),
    Program(
        "cgan_mnist",
        "Conditional GAN",
        "cgan_mnist",
        "mnist",
        ("confident_share", "coverage", "fid", "fid_real", "label_agreement"),
        judge="judge_mnist",
    ),
    Program(
        "transformer_multi30k",
        "Transformer translator (en-de)",
        "transformer_multi30k",
        "multi30k",
        ("bleu", "chrf", "bleu_greedy"),
    ),
)

QUICK_EPOCHS = ("--trainer.max_epochs", "2")
QUICK = (
    Program("cnn_digits", "CNN image classifier", "cnn_digits", None, ("accuracy",), QUICK_EPOCHS),
    Program(
        "judge_digits",
        "CNN judge for the GAN (no label smoothing, full recipe)",
        "cnn_digits",
        None,
        ("accuracy",),
        PLAIN,
    ),
    Program(
        "rnn_sentiment",
        "RNN text classifier (BiLSTM)",
        "rnn_sentiment",
        None,
        ("accuracy",),
        QUICK_EPOCHS,
    ),
    Program(
        "gan_digits",
        "GAN image generator",
        "gan_digits",
        None,
        ("confident_share", "coverage", "fid", "fid_real"),
        QUICK_EPOCHS,
        judge="judge_digits",
    ),
    Program(
        "transformer_numbers",
        "Transformer translator (numbers, en-de)",
        "transformer_numbers",
        None,
        ("bleu", "chrf", "bleu_greedy"),
        QUICK_EPOCHS,
    ),
)

# The TF-IDF baseline runs on the text program's own split: same data module, same split.
BASELINE_OF = {"rnn_sst2": "tfidf_sst2", "rnn_sentiment": "tfidf_sentiment"}


def command_for(program: Program, runs: Path, shared: Path) -> list[str]:
    cmd = ["fit", "--config", f"recipes/{program.recipe}.yaml", "--out", str(runs / program.name)]
    if program.data:
        cmd += ["--data.root", str(shared / program.data)]
    if program.judge:
        cmd += ["--model.init_args.judge", str(runs / program.judge)]
    return cmd + list(program.overrides)


STAMP = "bench_command.json"  # written into a run folder when the bench's command finished


def finished_by(run_dir: Path, args: list[str]) -> dict[str, Any] | None:
    """The stamp of ``run_dir`` when this bench finished it with exactly ``args`` (and its
    metrics are there), else None: only such a run may stand in for running ``args`` again."""
    stamp = run_dir / STAMP
    if not stamp.is_file() or not (run_dir / "metrics.json").is_file():
        return None
    try:
        record = json.loads(stamp.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record if record.get("args") == args else None


def run_program(program: Program, runs: Path, shared: Path, reuse: bool = False) -> dict[str, Any]:
    """Run one program (a ``longmm fit`` process) and read its test metrics back. With
    ``reuse``, a run folder this bench already finished with the same command is read
    instead of trained again (a full bench takes hours; it can go on where it stopped)."""
    row: dict[str, Any] = {"program": program.title, "run": program.name, "recipe": program.recipe}
    args = command_for(program, runs, shared)
    row["command"] = "longmm " + " ".join(shlex.quote(a) for a in args)
    if program.data and not (shared / program.data).is_dir():
        return {**row, "status": f"skipped: {shared / program.data} is missing"}
    run_dir = runs / program.name
    metrics_path = run_dir / "metrics.json"
    stamp = finished_by(run_dir, args) if reuse else None
    if stamp is not None:
        row["wall_seconds"] = stamp.get("wall_seconds")
        row["status"] = f"ok (reused: finished {stamp.get('finished', '?')})"
    else:
        (run_dir / STAMP).unlink(missing_ok=True)
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "longmm.cli", *args], capture_output=True, text=True
        )
        row["wall_seconds"] = round(time.perf_counter() - t0, 1)
        if done.returncode != 0 or not metrics_path.is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return {**row, "status": "failed: " + " | ".join(tail)}
        finished = time.strftime("%Y-%m-%d %H:%M:%S")
        record = {"args": args, "wall_seconds": row["wall_seconds"], "finished": finished}
        atomic_write_json(run_dir / STAMP, record)
        row["status"] = "ok"
    metrics = json.loads(metrics_path.read_text())
    row["train_seconds"] = metrics.get("seconds")
    row["test"] = {k: metrics["test"].get(k) for k in program.metrics}
    return row


def run_baseline(program: Program, runs: Path, shared: Path) -> dict[str, Any]:
    """TF-IDF + logistic regression on exactly the split the RNN recipe uses."""
    from longmm.baselines import tfidf_logreg
    from longmm.data import TextData

    config = yaml.safe_load(Path(f"recipes/{program.recipe}.yaml").read_text())
    init = dict(config["data"].get("init_args", {}))
    if program.data:
        init["root"] = str(shared / program.data)
    row: dict[str, Any] = {
        "program": "TF-IDF + logistic regression (baseline)",
        "run": BASELINE_OF[program.name],
        "recipe": program.recipe,
        "command": "longmm bench recipes (baseline on the same split)",
    }
    if program.data and not (shared / program.data).is_dir():
        return {**row, "status": f"skipped: {shared / program.data} is missing"}
    t0 = time.perf_counter()
    dm = TextData(**init)
    samples = dm.samples
    texts = {s: [x.inputs["text"] for x in samples[s]] for s in samples}
    labels = {s: [str(x.label) for x in samples[s]] for s in samples}
    result = tfidf_logreg(
        texts["train"],
        labels["train"],
        texts["test"],
        labels["test"],
        val_texts=texts["val"],
        val_labels=labels["val"],
    )
    seconds = round(time.perf_counter() - t0, 1)
    test = {"accuracy": result["accuracy"], "f1_macro": result.get("f1_macro")}
    return {**row, "status": "ok", "wall_seconds": seconds, "train_seconds": seconds, "test": test}


def markdown_table(rows: list[dict[str, Any]], title: str) -> str:
    lines = [
        f"### {title}",
        "",
        "| program | test metrics | training s | status |",
        "| --- | --- | ---: | --- |",
    ]
    for r in rows:
        metrics = ", ".join(
            f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
            for k, v in r.get("test", {}).items()
        )
        seconds = r.get("train_seconds")
        lines.append(
            f"| {r['program']} | {metrics or '—'} | {seconds if seconds is not None else '—'} "
            f"| {r['status']} |"
        )
    lines += ["", "Commands:", "", "```bash"]
    lines += [r["command"] for r in rows if r["command"].startswith("longmm fit")]
    lines += ["```", ""]
    return "\n".join(lines)


def update_docs(docs: Path, table: str, marker: str) -> None:
    """Replace the block between ``<!-- {marker} -->`` markers, or append it."""
    start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    text = docs.read_text() if docs.is_file() else "# Measured results\n"
    block = f"{start}\n{table}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    atomic_write_text(docs, text)


def run_recipes_bench(opts: argparse.Namespace) -> None:
    programs = QUICK if opts.quick else FULL
    if opts.only:
        wanted = set(opts.only.split(","))
        programs = tuple(
            p for p in programs if p.name in wanted or p.name in _judges(programs, wanted)
        )
    runs, shared = Path(opts.runs), Path(opts.shared)
    rows = []
    t0 = time.perf_counter()
    for program in programs:
        print(f"[bench recipes] {program.title}: {program.recipe}", flush=True)
        rows.append(run_program(program, runs, shared, reuse=getattr(opts, "reuse", False)))
        print(f"  -> {rows[-1]['status']} {rows[-1].get('test', '')}", flush=True)
        if program.name in BASELINE_OF:
            rows.append(run_baseline(program, runs, shared))
            print(f"  -> baseline {rows[-1].get('test', rows[-1]['status'])}", flush=True)
    name = "recipes_quick.json" if opts.quick else "recipes.json"
    out = Path(opts.json or Path("benchmarks/results") / name)
    wall = round(time.perf_counter() - t0, 1)
    atomic_write_json(out, {"quick": opts.quick, "wall_seconds": wall, "rows": rows})
    title = "Side by side (quick: embedded data, 2 epochs)" if opts.quick else "Side by side"
    table = markdown_table(rows, title)
    if not opts.quick:
        update_docs(Path(opts.docs), table, "bench:recipes")
    print(table)
    print(f"wrote {out}")


def _judges(programs: tuple[Program, ...], wanted: set[str]) -> set[str]:
    return {p.judge for p in programs if p.name in wanted and p.judge}

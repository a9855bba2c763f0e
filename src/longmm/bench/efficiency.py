"""``longmm bench efficiency``: our long encoder against Hugging Face's ``LongformerModel``
of the same size on CPU: tokens per second and peak memory per length.

Both models: hidden 256, 4 layers, 4 heads, feed-forward 1024, vocabulary 1000, random
weights (Longformer built from ``LongformerConfig``, nothing downloaded), one sequence, 16
global tokens (a question), fp32, inference (``torch.no_grad``, eval mode). Longformer's
``attention_window=512`` lets a token see 256 tokens on each side; ours uses blocks of 256
tokens, so a token sees at least 256 (up to 512) on each side: at least as much context.

Every measurement is a fresh Python process (``python -m longmm.bench.efficiency ...``), so
its peak memory is its own: ``peak_mib`` is the process's peak resident set
(``getrusage(RUSAGE_SELF).ru_maxrss``: Python, torch, the model and the forward pass) and
``forward_mib`` the part of it the forward pass added (the peak minus the resident set just
before the call). Each process first runs a short warm-up forward, then times one forward.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from longmm.errors import LongmmError
from longmm.io import atomic_write_json

DIM, LAYERS, HEADS, FF, VOCAB, WINDOW, GLOBAL = 256, 4, 4, 1024, 1000, 512, 16
BLOCK = (WINDOW + 1) // 3  # 3 blocks of 171 = 513 keys per token, as Longformer's 2 * 256 + 1
DEFAULT_BOTH = (4096, 16384, 65536)
DEFAULT_OURS = (262144, 1048576)
IMPLS = ("longmm", "longformer")
PRECISIONS = ("fp32", "bf16")
MARKER = "bench-efficiency"


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _build(impl: str, tokens: int):
    """The model and a ``run(ids)`` closure for one forward pass."""
    import torch

    if impl == "longmm":
        from longmm.modules.long_encoder import LongEncoder

        model = LongEncoder(VOCAB, dim=DIM, layers=LAYERS, heads=HEADS, block=BLOCK).eval()

        def run(ids):
            return model(ids[:, GLOBAL:], global_tokens=ids[:, :GLOBAL]).tokens

        return run
    if impl == "longformer":
        from transformers import LongformerConfig, LongformerModel

        config = LongformerConfig(
            vocab_size=VOCAB,
            hidden_size=DIM,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            intermediate_size=FF,
            attention_window=WINDOW,
            max_position_embeddings=tokens + 2 * WINDOW + 2,
        )
        model = LongformerModel(config).eval()

        def run(ids):
            glob = torch.zeros_like(ids)
            glob[:, :GLOBAL] = 1
            return model(input_ids=ids, global_attention_mask=glob).last_hidden_state

        return run
    raise LongmmError(f"unknown implementation {impl!r}; choose from {IMPLS}")


def measure(
    impl: str, tokens: int, precision: str = "fp32", threads: int | None = None, repeats: int = 1
) -> dict[str, Any]:
    """The fastest of ``repeats`` forwards of ``tokens`` tokens (16 of them global) in this
    process; ``precision="bf16"`` runs under ``torch.autocast`` (bfloat16 matrix products)."""
    import torch

    if precision not in PRECISIONS:
        raise LongmmError(f"unknown precision {precision!r}; choose from {PRECISIONS}")
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    run = _build(impl, tokens)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    with torch.no_grad(), autocast:
        run(torch.randint(0, VOCAB, (1, 2 * WINDOW)))  # warm-up: lazy initialisation
        ids = torch.randint(0, VOCAB, (1, tokens))
        before = _rss_mib()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            width = run(ids).shape[1]
            times.append(time.perf_counter() - start)
    if width < tokens - GLOBAL:
        raise LongmmError(f"{impl} returned {width} tokens for {tokens}")
    peak = _peak_mib()
    seconds = min(times)
    return {
        "impl": impl,
        "precision": precision,
        "tokens": tokens,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 1),
        "peak_mib": round(peak, 1),
        "forward_mib": round(max(peak - before, 0.0), 1),
        "threads": torch.get_num_threads(),
        "repeats": repeats,
    }


def _cap_data_segment(limit_mib: int) -> None:
    """Cap this process's data segment (heap and anonymous mappings), so that a model running
    out of memory fails alone with an allocation error instead of waking the machine's OOM
    killer, which could pick anyone's process. Called by the child after its imports: an
    import that fails for want of memory fails in odd ways (SystemError), not as MemoryError."""
    size = limit_mib * 2**20
    resource.setrlimit(resource.RLIMIT_DATA, (size, size))


def _import_impl(impl: str) -> None:
    """Import what :func:`measure` needs for ``impl`` (before the memory cap)."""
    import torch  # noqa: F401

    if impl == "longformer":
        import transformers.models.longformer.modeling_longformer  # noqa: F401
    else:
        import longmm.modules.long_encoder  # noqa: F401


def measure_in_child(
    impl: str,
    tokens: int,
    precision: str,
    threads: int | None,
    repeats: int,
    timeout: float,
    memory_limit_mib: int = 10240,
) -> dict:
    """:func:`measure` in a fresh interpreter (its own peak memory), its memory capped at
    ``memory_limit_mib``. A failure becomes a row with ``error`` (and no numbers)."""
    cmd = [sys.executable, "-m", "longmm.bench.efficiency", impl, str(tokens), precision]
    cmd += [str(repeats), str(threads or 0), str(memory_limit_mib)]
    row: dict[str, Any] = {"impl": impl, "precision": precision, "tokens": tokens}
    try:
        done = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {**row, "error": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        text = done.stderr + done.stdout
        if "can't allocate memory" in text or "MemoryError" in text or done.returncode == -9:
            return {**row, "error": f"out of memory (limit {memory_limit_mib} MiB)"}
        tail = " | ".join(text.strip().splitlines()[-2:])
        return {**row, "error": f"exit {done.returncode}: {tail or 'no output'}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _ratios(ours: dict | None, theirs: dict | None) -> dict[str, float]:
    if not ours or not theirs:
        return {}
    return {
        "speedup": round(ours["tokens_per_s"] / theirs["tokens_per_s"], 2),
        "peak_ratio": round(ours["peak_mib"] / theirs["peak_mib"], 3),
        "forward_mem_ratio": round(ours["forward_mib"] / max(theirs["forward_mib"], 1e-9), 3),
    }


def checks(rows: list[dict]) -> dict[str, Any]:
    """The targets: at 16K >= 5x Longformer's throughput and <= 1/3 of its peak memory;
    time(256K) / time(16K) <= 20; 1M tokens within 8 GiB. Ours is taken in bf16 autocast
    (its default for CPU inference) against Longformer as shipped (fp32); every other
    pairing at 16K is listed too."""
    by = {(r["impl"], r["precision"], r["tokens"]): r for r in rows if "error" not in r}
    out: dict[str, Any] = {}
    for mine in PRECISIONS:
        for theirs in PRECISIONS:
            pair = _ratios(by.get(("longmm", mine, 16384)), by.get(("longformer", theirs, 16384)))
            for key, value in pair.items():
                out[f"16k_{key}_longmm_{mine}_vs_longformer_{theirs}"] = value
    ours = by.get(("longmm", "bf16", 16384))
    long = by.get(("longmm", "bf16", 262144))
    if ours and long:
        out["time_256k_over_16k"] = round(long["seconds"] / ours["seconds"], 2)
    million = by.get(("longmm", "bf16", 1048576))
    if million:
        out["peak_mib_1m"] = million["peak_mib"]
        out["within_8gib_1m"] = million["peak_mib"] <= 8192
    main = "16k_{}_longmm_bf16_vs_longformer_fp32"
    if main.format("speedup") in out:
        out["met_5x_speed_16k"] = out[main.format("speedup")] >= 5
        out["met_third_memory_16k"] = out[main.format("peak_ratio")] <= 1 / 3
    if "time_256k_over_16k" in out:
        out["met_linear_256k"] = out["time_256k_over_16k"] <= 20
    return out


def table(rows: list[dict], summary: dict[str, Any], command: str) -> str:
    lines = [
        "| impl | precision | tokens | seconds | tokens/s | peak MiB | forward MiB |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if "error" in r:
            lines.append(
                f"| {r['impl']} | {r['precision']} | {r['tokens']} | failed: {r['error']} |||"
            )
            continue
        lines.append(
            f"| {r['impl']} | {r['precision']} | {r['tokens']} | {r['seconds']:.2f} "
            f"| {r['tokens_per_s']:.0f} | {r['peak_mib']:.0f} | {r['forward_mib']:.0f} |"
        )
    text = "\n".join(lines)
    if summary:
        text += "\n\n" + "\n".join(f"- {k}: {v}" for k, v in summary.items())
    return f"Command: `{command}`\n\n{text}"


def _lengths(text: str | None, default: tuple[int, ...]) -> list[int]:
    if text is None:
        return list(default)
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise LongmmError(f"lengths must be comma-separated integers, got {text!r}") from None


def run_efficiency_bench(opts: argparse.Namespace) -> None:
    both = _lengths(opts.lengths, DEFAULT_BOTH)
    ours = _lengths(opts.ours_lengths, DEFAULT_OURS)
    precisions = opts.precisions.split(",")
    for p in precisions:
        if p not in PRECISIONS:
            raise LongmmError(f"--precisions: unknown {p!r}; choose from {PRECISIONS}")
    plan = [(impl, p, n) for n in both for impl in IMPLS for p in precisions]
    plan += [("longmm", "bf16" if "bf16" in precisions else precisions[0], n) for n in ours]
    rows: list[dict] = []
    out = Path(opts.json or "benchmarks/results/efficiency.json")
    command = ("longmm bench efficiency " + " ".join(opts.argv)).strip()
    for impl, precision, n in plan:
        print(f"[bench efficiency] {impl} {precision} {n} tokens ...", flush=True)
        repeats = opts.repeats if n <= 16384 else 1
        row = measure_in_child(
            impl, n, precision, opts.threads, repeats, opts.timeout, opts.memory_limit
        )
        rows.append(row)
        shown = row.get("error") or (
            f"{row['seconds']:.2f} s, {row['tokens_per_s']:.0f} tok/s, "
            f"peak {row['peak_mib']:.0f} MiB (forward {row['forward_mib']:.0f})"
        )
        print(f"  -> {shown}", flush=True)
        # Written after every row (marked incomplete): a long run stopped halfway keeps its rows.
        atomic_write_json(out, {"rows": rows, "complete": False, "command": command})
    summary = checks(rows)
    atomic_write_json(out, {"rows": rows, "summary": summary, "command": command})
    text = table(rows, summary, command)
    print(text)
    print(f"[bench efficiency] wrote {out}")
    if opts.docs:
        from longmm.bench.recipes import update_docs

        update_docs(Path(opts.docs), text, MARKER)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "efficiency", help="our long encoder vs Hugging Face LongformerModel: speed and memory"
    )
    p.add_argument("--json", default=None, help="default benchmarks/results/efficiency.json")
    p.add_argument("--lengths", default=None, help="lengths for both (default 4096,16384,65536)")
    p.add_argument(
        "--ours-lengths", default=None, help="lengths for ours alone (default 262144,1048576)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads per measurement")
    p.add_argument(
        "--precisions", default="fp32,bf16", help="fp32 and/or bf16 (autocast), comma-separated"
    )
    p.add_argument(
        "--repeats", type=int, default=2, help="timed forwards up to 16K (the best counts)"
    )
    p.add_argument("--timeout", type=float, default=1800, help="seconds per measurement")
    p.add_argument(
        "--memory-limit",
        type=int,
        default=10240,
        help="MiB of data segment per measurement (beyond it the run fails as out of memory)",
    )
    p.add_argument("--docs", default=None, help="results page to update (e.g. docs/results.md)")


if (
    __name__ == "__main__"
):  # python -m longmm.bench.efficiency IMPL TOKENS PRECISION REPEATS THREADS LIMIT_MIB
    _impl, _tokens, _precision, _repeats, _threads, _limit = sys.argv[1:7]
    _import_impl(_impl)
    _cap_data_segment(int(_limit))
    print(
        json.dumps(measure(_impl, int(_tokens), _precision, int(_threads) or None, int(_repeats)))
    )

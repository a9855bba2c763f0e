"""``longmm bench serve``: the model alone in process (at batch 1 and at ``--max-batch``)
beside a real ``longmm serve`` process (at ``--max-batch 1`` and with dynamic batching), in
one run; each configuration is one row of ``--json``: ``{"mode": "in_process" | "server",
"model", "max_batch", "throughput_rps", "p50_ms", "p99_ms", "status_counts", "crashed", ...}``.

In process, the good requests' inputs are prepared (decoded, tokenized: what the server's
HTTP side does) and classified, ``max_batch`` at a time, in this process with
``--threads`` torch threads; each request's latency is its batch's. Each server
configuration gets its own process on a free loopback port (the command a user types); both
are warmed up, then sent the same ``--requests`` requests by ``--concurrency`` concurrent
clients, in ``--rounds`` interleaved rounds (A then B, B then A, ...: on a shared machine a
change of load mid-run then falls on both alike). ``--malformed`` (a share) of the requests
are broken in varied ways (:mod:`longmm.bench.serve_payloads`). Then the servers are stopped
with SIGTERM. Reported per server: throughput (all answers, and good answers), latency
percentiles of the good requests, counts by status code, the batch-size histogram scraped from
``/metrics``, the server's CPU time per request (all its processes), whether every malformed
request got a 4xx, and whether the server crashed (exited other than cleanly, or dropped a
connection). The load comes from :mod:`longmm.bench.serve_load`.

The check that matters: the server with dynamic batching answers good requests at >= 0.8 of
the in-process batched throughput (``checks.server_vs_in_process``), with no 5xx, no crash,
and every malformed request a 4xx.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from longmm.bench.serve_load import LOAD, Request, send_load
from longmm.bench.serve_payloads import KEY, MAX_REQUEST_MB, MAX_TEXT_TOKENS, build_requests
from longmm.io import atomic_write_json

MACHINE = "2-core CPU, shared/loaded machine"
TARGET_RATIO = 0.8


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="load test of longmm serve (max-batch 1, dynamic batching) beside the model alone "
        "in process (batch 1, largest batch)",
    )
    p.add_argument("--run", default=None, help="run folder to serve (default: train one)")
    p.add_argument(
        "--recipe",
        default="recipes/fusion_av_digits.yaml",
        help="recipe trained when --run is not given (briefly: the load, not the accuracy, "
        "is measured)",
    )
    p.add_argument("--train-epochs", type=int, default=2, help="epochs of that training")
    p.add_argument("--runs", default="benchmarks/runs", help="parent folder of a trained run")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--malformed", type=float, default=0.1, help="share of malformed requests")
    p.add_argument(
        "--max-batch",
        type=int,
        default=32,
        help="the dynamic batching row's size, and the in-process largest batch",
    )
    p.add_argument("--batch-timeout-ms", type=float, default=10.0)
    p.add_argument(
        "--text-sentences",
        type=int,
        default=12,
        help="a text request holds half this many to this many review sentences (1: one)",
    )
    p.add_argument("--warmup", type=int, default=64, help="requests sent before measuring")
    p.add_argument("--threads", type=int, default=1, help="torch threads in the server")
    p.add_argument("--api-servers", type=int, default=2, help="HTTP processes per server")
    p.add_argument("--clients", type=int, default=2, help="load-generating processes")
    p.add_argument(
        "--rounds", type=int, default=4, help="interleaved rounds the requests are split into"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="benchmarks/results/serve.json", help="output JSON")


# ---- the server ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    def __init__(
        self,
        run: Path,
        max_batch: int,
        timeout_ms: float,
        threads: int,
        log: Path,
        api_servers: int = 1,
    ):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [
            sys.executable,
            "-m",
            "longmm.cli",
            "serve",
            str(run),
            "--port",
            str(self.port),
            "--max-batch",
            str(max_batch),
            "--batch-timeout-ms",
            str(timeout_ms),
            "--api-key",
            KEY,
            "--max-text-tokens",
            str(MAX_TEXT_TOKENS),
            "--max-request-mb",
            str(MAX_REQUEST_MB),
            "--api-servers",
            str(api_servers),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        self.log = open(log, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.command, stdout=self.log, stderr=subprocess.STDOUT, env=env
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited while starting; see {log}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"server not ready after 180 s; see {log}")

    def metrics(self) -> str:
        req = urllib.request.Request(self.url + "/metrics", headers={"X-API-Key": KEY})
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read().decode()

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of the server and all its processes so far."""
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        total = 0.0
        for proc in procs:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        self.log.close()
        return self.proc.returncode


def batch_histogram(metrics_text: str) -> dict[str, int]:
    """Model calls per batch-size bucket (``"<=N"``), from the cumulative histogram."""
    cumulative: list[tuple[float, float]] = []
    for line in metrics_text.splitlines():
        if line.startswith("longmm_batch_size_bucket{"):
            labels, value = line.rsplit(" ", 1)
            le = labels.split('le="', 1)[1].split('"', 1)[0]
            cumulative.append((float("inf") if le == "+Inf" else float(le), float(value)))
    cumulative.sort()
    hist, previous = {}, 0.0
    for le, count in cumulative:
        if count - previous > 0:
            hist["<=inf" if le == float("inf") else f"<={int(le)}"] = int(count - previous)
        previous = count
    return hist


# ---- the model alone, in process ------------------------------------------------------------


def _raw_inputs(request: Request) -> dict[str, Any]:
    from longmm.deploy.serve.inputs import raw_inputs

    return raw_inputs(json.loads(request.body))


def measure_in_process(
    run: Path, requests: list[Request], batch_sizes: tuple[int, ...], threads: int
) -> dict[int, dict[str, Any]]:
    """The good requests prepared and classified here, ``batch`` at a time."""
    import torch

    from longmm.deploy.runfolder import load_served_run

    torch.set_num_threads(threads)
    served = load_served_run(run)
    raws = [_raw_inputs(r) for r in requests if r.malformed is None]
    served.predict([served.prep.prepare(raws[0])])  # warm-up
    rows = {}
    for batch in batch_sizes:
        latencies: list[float] = []
        start = time.perf_counter()
        for i in range(0, len(raws), batch):
            chunk = raws[i : i + batch]
            t0 = time.perf_counter()
            served.predict([served.prep.prepare(raw) for raw in chunk])
            latencies += [time.perf_counter() - t0] * len(chunk)
        seconds = time.perf_counter() - start
        rows[batch] = {
            **rates(len(raws), latencies, seconds),
            "status_counts": {"ok": len(raws)},
            "crashed": False,
        }
    return rows


def rates(answered: int, good_seconds: list[float], seconds: float) -> dict[str, Any]:
    """Throughput of all answers and of good ones, and latency percentiles of good ones."""
    lat = np.array(good_seconds) * 1000 if good_seconds else np.array([float("nan")])
    return {
        "requests": answered,
        "seconds": round(seconds, 3),
        "throughput_rps": round(answered / seconds, 1),
        "ok_rps": round(len(good_seconds) / seconds, 1),
        **{f"p{q}_ms": round(float(np.percentile(lat, q)), 2) for q in (50, 90, 99)},
    }


# ---- the servers ----------------------------------------------------------------------------


def summarize(
    results: list[tuple[Request, int | str, float]], seconds: float, hist: dict[str, int]
) -> dict[str, Any]:
    codes = Counter(str(status) for _, status, _ in results)
    good = [t for r, status, t in results if r.malformed is None and status == 200]
    bad = [(r, status) for r, status, _ in results if r.malformed is not None]
    not_4xx = Counter(r.malformed for r, s in bad if not (isinstance(s, int) and 400 <= s < 500))
    return {
        **rates(len(results), good, seconds),
        "status_counts": dict(sorted(codes.items())),
        "good_ok": len(good),
        "malformed": len(bad),
        "malformed_not_4xx": dict(not_4xx),
        "malformed_codes": dict(sorted(Counter(f"{r.malformed}:{s}" for r, s in bad).items())),
        "batch_size_histogram": hist,
        "connection_errors": sum(v for k, v in codes.items() if k.startswith("error")),
    }


def _interleaved(
    pool: Any, servers: dict[int, ServerProcess], n: int, opts: argparse.Namespace
) -> tuple[dict[int, list], dict[int, float], dict[int, float]]:
    """Results, wall seconds and server CPU seconds per server, over interleaved rounds."""
    results: dict[int, list] = {mb: [] for mb in servers}
    seconds = dict.fromkeys(servers, 0.0)
    cpu = dict.fromkeys(servers, 0.0)
    size = -(-n // opts.rounds)
    order = list(servers)
    for r in range(opts.rounds):
        chunk = list(range(r * size, min(n, (r + 1) * size)))
        for mb in order if r % 2 == 0 else order[::-1]:
            server = servers[mb]
            cpu0, start = server.cpu_seconds(), time.perf_counter()
            url = server.url + "/predict"
            results[mb] += send_load(pool, url, chunk, opts.concurrency, opts.clients)
            seconds[mb] += time.perf_counter() - start
            cpu[mb] += server.cpu_seconds() - cpu0
    return results, seconds, cpu


def measure(
    servers: dict[int, ServerProcess],
    requests: list[Request],
    warmup: list[Request],
    opts: argparse.Namespace,
) -> dict[int, dict[str, Any]]:
    """Send ``requests`` to every server in interleaved rounds (A B, B A, ...), so that a
    change in the machine's load mid-run falls on both configurations alike."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    LOAD[:] = [*requests, *warmup]
    n = len(requests)
    pool = ProcessPoolExecutor(opts.clients, mp_context=multiprocessing.get_context("fork"))
    try:
        for server in servers.values():
            url = server.url + "/predict"
            send_load(pool, url, list(range(n, len(LOAD))), opts.concurrency, opts.clients)
        before = {mb: batch_histogram(s.metrics()) for mb, s in servers.items()}
        results, seconds, cpu = _interleaved(pool, servers, n, opts)
    finally:
        pool.shutdown()
    rows = {}
    for mb, server in servers.items():
        after = batch_histogram(server.metrics())
        hist = {k: after[k] - before[mb].get(k, 0) for k in after}
        rows[mb] = summarize(results[mb], seconds[mb], {k: v for k, v in hist.items() if v > 0})
        rows[mb]["server_cpu_ms_per_request"] = round(1000 * cpu[mb] / max(1, n), 3)
    return rows


def run_servers(
    run: Path, requests: list[Request], warmup: list[Request], opts: argparse.Namespace
) -> list[dict[str, Any]]:
    """One server per configuration, measured side by side; a row each."""
    logs = Path(opts.runs) / "serve_logs"
    logs.mkdir(parents=True, exist_ok=True)
    configs = (1, opts.max_batch)
    servers: dict[int, ServerProcess] = {}
    try:
        for max_batch in configs:
            print(f"[bench serve] starting the server with --max-batch {max_batch}", flush=True)
            log = logs / f"max_batch_{max_batch}.log"
            servers[max_batch] = ServerProcess(
                run, max_batch, opts.batch_timeout_ms, opts.threads, log, opts.api_servers
            )
        measured = measure(servers, requests, warmup, opts)
        alive = {mb: s.alive() for mb, s in servers.items()}
    finally:
        codes = {mb: s.stop() for mb, s in servers.items()}
    rows = []
    for max_batch in configs:
        row = measured[max_batch]
        crashed = not alive[max_batch] or codes[max_batch] != 0 or row["connection_errors"] > 0
        rows.append(
            {
                "mode": "server",
                "max_batch": max_batch,
                "batch_timeout_ms": opts.batch_timeout_ms if max_batch > 1 else 0.0,
                **row,
                "exit_code": codes[max_batch],
                "crashed": crashed,
                "server_command": shlex.join(["longmm", *servers[max_batch].command[3:]]),
            }
        )
    return rows


# ---- the benchmark --------------------------------------------------------------------------


def _trained_run(opts: argparse.Namespace) -> Path:
    if opts.run:
        return Path(opts.run)
    run = Path(opts.runs) / f"serve_{Path(opts.recipe).stem}"
    if not (run / "checkpoints" / "best.ckpt").is_file():
        print(f"[bench serve] training {opts.recipe} into {run}", flush=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "longmm.cli",
                "fit",
                "--config",
                opts.recipe,
                "--out",
                str(run),
                "--trainer.max_epochs",
                str(opts.train_epochs),
                "--trainer.enable_progress_bar",
                "false",
            ],
            check=True,
        )
    return run


def checks_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    servers = [r for r in rows if r["mode"] == "server"]
    in_process = max((r for r in rows if r["mode"] == "in_process"), key=lambda r: r["max_batch"])
    one, dyn = sorted(servers, key=lambda r: r["max_batch"])
    five_xx = sum(
        v for r in servers for k, v in r["status_counts"].items() if k.isdigit() and k[0] == "5"
    )
    checks: dict[str, Any] = {
        "zero_5xx": five_xx == 0,
        "no_crash": not any(r["crashed"] for r in servers),
        "malformed_all_4xx": all(not r["malformed_not_4xx"] for r in servers),
        # good answers per second, against the model alone on the same good requests
        "server_vs_in_process": round(dyn["ok_rps"] / in_process["ok_rps"], 2),
        "dynamic_vs_batch_1": round(dyn["throughput_rps"] / one["throughput_rps"], 2),
    }
    checks["met"] = (
        checks["zero_5xx"]
        and checks["no_crash"]
        and checks["malformed_all_4xx"]
        and checks["server_vs_in_process"] >= TARGET_RATIO
    )
    return checks


def _load_description(opts: argparse.Namespace, warmup: int) -> dict[str, Any]:
    from longmm.bench.serve_payloads import MALFORMED_KINDS

    return {
        "requests": opts.requests,
        "concurrency": opts.concurrency,
        "malformed_share": opts.malformed,
        "malformed_kinds": list(MALFORMED_KINDS),
        "warmup_requests": warmup,
        "interleaved_rounds": opts.rounds,
        "text_sentences": opts.text_sentences,
        "server_torch_threads": opts.threads,
        "api_servers": opts.api_servers,
        "client_processes": opts.clients,
    }


def run_serve_bench(opts: argparse.Namespace) -> dict[str, Any]:
    from longmm.deploy.runfolder import load_served_run

    run = _trained_run(opts)
    served = load_served_run(run)
    model, modalities = served.name, served.modalities
    del served
    requests = build_requests(
        model, modalities, opts.requests, opts.malformed, opts.seed, opts.text_sentences
    )
    warmup = build_requests(model, modalities, opts.warmup, 0.0, opts.seed + 1, opts.text_sentences)
    print("[bench serve] the model alone, in process", flush=True)
    alone = measure_in_process(run, requests, (1, opts.max_batch), opts.threads)
    rows = [{"mode": "in_process", "max_batch": b, **row} for b, row in alone.items()]
    rows += run_servers(run, requests, warmup, opts)
    for row in rows:
        row["model"] = model
        print(
            f"  {row['mode']} max_batch {row['max_batch']}: {row['throughput_rps']} req/s, "
            f"p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, codes {row['status_counts']}",
            flush=True,
        )
    checks = checks_of(rows)
    result = {
        "rows": rows,
        "checks": checks,
        "model": {"run": str(run), "name": model, "modalities": modalities},
        "load": _load_description(opts, len(warmup)),
        "machine": MACHINE,
        "command": "longmm bench serve " + " ".join(shlex.quote(a) for a in opts.argv),
    }
    out_json = Path(opts.json)
    atomic_write_json(out_json, result)
    print(f"[bench serve] {json.dumps(checks)}\nwrote {out_json}", flush=True)
    return result

"""``longmm bench serve``: a bounded load on a real ``longmm serve`` process, for one request
per model call (``--max-batch 1``) and for dynamic batching, in one run.

Each configuration gets its own server process on a free loopback port (the command a user
types); both are warmed up, then sent the same ``--requests`` requests by ``--concurrency``
concurrent clients, in ``--rounds`` interleaved rounds (A then B, B then A, ...: on a shared
machine a change of load mid-run then falls on both alike). ``--malformed`` (a share) of the
requests are broken in varied ways: invalid JSON, unknown fields, missing inputs, wrong types,
an unknown model, too many tokens, an image for a text model, bad base64, a wrong content
type, no API key, an oversized body. Then the servers are stopped with SIGTERM. Reported per
configuration: throughput, latency percentiles of the good requests, counts by status code,
the batch-size histogram scraped from ``/metrics``, whether every malformed request got a
4xx, and whether the server crashed (exited other than cleanly, or dropped a connection).
The load comes from plain asyncio HTTP/1.1 keep-alive clients with the requests encoded
beforehand (``--clients`` processes), so that the load generator takes little of the CPU the
server shares with it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from longmm.io import atomic_write_json

KEY = "bench-key"
MACHINE = "2-core CPU, shared/loaded machine"
MALFORMED_KINDS = (
    "invalid_json",
    "unknown_field",
    "no_inputs",
    "text_not_string",
    "unknown_model",
    "too_many_tokens",
    "wrong_modality",
    "bad_base64",
    "wrong_content_type",
    "no_api_key",
    "oversized_body",
)
MAX_REQUEST_MB = 1.0
MAX_TEXT_TOKENS = 256


def add_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="load test of longmm serve: max-batch 1 vs dynamic batching")
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
    p.add_argument("--max-batch", type=int, default=32, help="the dynamic batching row's size")
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


# ---- payloads -------------------------------------------------------------------------------


def _texts(n: int, seed: int, sentences: int = 1) -> list[str]:
    """Texts of ``sentences // 2`` to ``sentences`` sentences of the embedded review set (one
    sentence each when ``sentences`` is 1): short posts, or review-length documents."""
    from longmm.data.builtin import BUILTINS

    pool = [s.inputs["text"] for s in BUILTINS["sentiment"].read().splits["all"]]
    rng = random.Random(seed)
    lo = max(1, sentences // 2)
    return [" ".join(rng.choices(pool, k=rng.randint(lo, sentences))) for _ in range(n)]


def _images(n: int, seed: int) -> list[bytes]:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits().images  # (1797, 8, 8) in 0..16
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        pixels = (digits[rng.randrange(len(digits))] * 255 / 16).astype(np.uint8)
        Image.fromarray(pixels).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def _clips(n: int, seed: int, rate: int = 8000) -> list[bytes]:
    import soundfile as sf

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        t = np.arange(int(rate * rng.uniform(0.3, 0.8))) / rate
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(150, 400) * t) * np.exp(-3 * t)
        buf = io.BytesIO()
        sf.write(buf, wave.astype(np.float32), rate, format="WAV")
        out.append(buf.getvalue())
    return out


@dataclass
class Request:
    body: bytes
    headers: dict[str, str]
    malformed: str | None = None  # the kind, for a broken request


def build_requests(
    model: str, modalities: list[str], n: int, malformed: float, seed: int, sentences: int = 1
) -> list[Request]:
    """``n`` requests in a fixed shuffled order: good ones for the model's modalities, and
    about ``malformed * n`` broken ones cycling through ``MALFORMED_KINDS``."""
    rng = random.Random(seed)
    n_bad = round(n * malformed)
    texts = _texts(n, seed, sentences) if "text" in modalities else []
    images = _images(n, seed) if "image" in modalities else []
    clips = _clips(min(n, 200), seed) if "audio" in modalities else []
    json_headers = {"Content-Type": "application/json", "X-API-Key": KEY}

    def good(i: int) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": model}
        if texts:
            payload["text"] = texts[i]
        if images:
            payload["image"] = base64.b64encode(images[i]).decode()
        if clips:
            payload["audio"] = base64.b64encode(clips[i % len(clips)]).decode()
        return payload

    requests = [Request(json.dumps(good(i)).encode(), json_headers) for i in range(n - n_bad)]
    for j in range(n_bad):
        kind = MALFORMED_KINDS[j % len(MALFORMED_KINDS)]
        base = good(j)
        headers = dict(json_headers)
        if kind == "invalid_json":
            body = json.dumps(base).encode()[:-3]
        elif kind == "unknown_field":
            body = json.dumps({**base, "colour": "blue"}).encode()
        elif kind == "no_inputs":
            body = json.dumps({"model": model}).encode()
        elif kind == "text_not_string":
            body = json.dumps({"model": model, "text": [1, 2, 3]}).encode()
        elif kind == "unknown_model":
            body = json.dumps({**base, "model": "no-such-model"}).encode()
        elif kind == "too_many_tokens":
            body = json.dumps({"model": model, "text": "word " * (4 * MAX_TEXT_TOKENS)}).encode()
        elif kind == "wrong_modality":
            other = "image" if "image" not in modalities else "text"
            value = base64.b64encode(b"\x89PNG not really").decode() if other == "image" else "hi"
            body = json.dumps({"model": model, other: value}).encode()
        elif kind == "bad_base64":
            body = json.dumps({"model": model, "image": "@@not base64@@"}).encode()
        elif kind == "wrong_content_type":
            body = b"text=hello"
            headers["Content-Type"] = "text/plain"
        elif kind == "no_api_key":
            body = json.dumps(base).encode()
            headers.pop("X-API-Key")
        else:  # oversized_body
            body = b'{"model": "x", "text": "' + b"a" * int(MAX_REQUEST_MB * 1.2e6) + b'"}'
        requests.append(Request(body, headers, kind))
    rng.shuffle(requests)
    return requests


# ---- the server -----------------------------------------------------------------------------


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


# ---- the load -------------------------------------------------------------------------------


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """One HTTP/1.1 response off ``reader``: its status, and whether the connection stays
    open. The body is read whole (by Content-Length, chunks, or to the end) and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ValueError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    status = int(parts[1])
    length, chunked, keep = None, False, parts[0] == b"HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value
        elif name == b"connection":
            keep = value != b"close" if keep else value == b"keep-alive"
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)  # the chunk and its CRLF
            if size == 0:
                break
    elif length is not None:
        await reader.readexactly(length)
    else:
        await reader.read()  # to the end: the server closes
        keep = False
    return status, keep


def _wire(host: str, path: str, r: Request) -> bytes:
    """The request as bytes on the wire: request line, Host, the request's own headers,
    Content-Length, then the body."""
    head = [f"POST {path} HTTP/1.1", f"Host: {host}"]
    head += [f"{k}: {v}" for k, v in r.headers.items()]
    head.append(f"Content-Length: {len(r.body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + r.body


async def _send_all(
    url: str, requests: list[Request], concurrency: int
) -> list[tuple[Request, int | str, float]]:
    """Send ``requests`` over ``concurrency`` keep-alive HTTP/1.1 connections: each result
    is the status code (or ``"error: <exception>"`` when the connection failed or the
    answer took over 120 s) and the seconds from sending to having read the whole answer.

    A plain asyncio client with the requests encoded beforehand: on a 2-core machine the
    load generator shares the cores with the server, and aiohttp's per-request work (its
    client machinery, header handling, response parsing in Python objects) took several
    times the CPU of writing prepared bytes and reading the status line, headers and body.
    """
    parsed = urllib.parse.urlsplit(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    path = parsed.path or "/"
    wires = [_wire(parsed.netloc, path, r) for r in requests]
    results: list[tuple[Request, int | str, float]] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(requests)):
        queue.put_nowait(i)

    async def client() -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while not queue.empty():
            i = queue.get_nowait()
            start = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                assert reader is not None
                writer.write(wires[i])
                await writer.drain()
                status: int | str
                status, keep = await asyncio.wait_for(_read_response(reader), 120)
            except (OSError, EOFError, TimeoutError, ValueError, asyncio.LimitOverrunError) as err:
                status, keep = f"error: {type(err).__name__}", False
            results.append((requests[i], status, time.perf_counter() - start))
            if not keep and writer is not None:
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return results


_LOAD: list[Request] = []  # the requests, inherited by forked client processes


def _client_process(url: str, indices: list[int], concurrency: int) -> list[tuple]:
    """One load-generating process: ``(index, status, seconds)`` for its share."""
    sent = asyncio.run(_send_all(url, [_LOAD[i] for i in indices], concurrency))
    position = {id(_LOAD[i]): i for i in indices}
    return [(position[id(r)], status, t) for r, status, t in sent]


def send_load(
    pool: Any, url: str, indices: list[int], concurrency: int, clients: int
) -> list[tuple[Request, int | str, float]]:
    """``indices`` of the load sent by ``clients`` processes (``concurrency`` connections in
    all): on a small machine one Python client alone cannot keep a fast server busy."""
    if clients <= 1:
        return asyncio.run(_send_all(url, [_LOAD[i] for i in indices], concurrency))
    shares = [indices[c::clients] for c in range(clients)]
    per_client = max(1, concurrency // clients)
    futures = [pool.submit(_client_process, url, share, per_client) for share in shares]
    return [(_LOAD[i], status, t) for f in futures for i, status, t in f.result()]


def summarize(
    results: list[tuple[Request, int | str, float]], seconds: float, hist: dict[str, int]
) -> dict[str, Any]:
    codes = Counter(str(status) for _, status, _ in results)
    good = [t for r, status, t in results if r.malformed is None and status == 200]
    bad = [(r, status) for r, status, _ in results if r.malformed is not None]
    not_4xx = Counter(r.malformed for r, s in bad if not (isinstance(s, int) and 400 <= s < 500))
    lat = np.array(good) * 1000 if good else np.array([float("nan")])
    return {
        "requests": len(results),
        "seconds": round(seconds, 3),
        "throughput_rps": round(len(results) / seconds, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p90_ms": round(float(np.percentile(lat, 90)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "status_counts": dict(sorted(codes.items())),
        "good_ok": len(good),
        "malformed": len(bad),
        "malformed_not_4xx": dict(not_4xx),
        "malformed_codes": dict(sorted(Counter(f"{r.malformed}:{s}" for r, s in bad).items())),
        "batch_size_histogram": hist,
        "connection_errors": sum(v for k, v in codes.items() if k.startswith("error")),
    }


def measure(
    servers: dict[int, ServerProcess],
    requests: list[Request],
    warmup: list[Request],
    concurrency: int,
    rounds: int,
    clients: int = 1,
) -> dict[int, dict[str, Any]]:
    """Send ``requests`` to every server in ``rounds`` interleaved rounds (A B, B A, ...), so
    that a change in the machine's load mid-run falls on both configurations alike."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    _LOAD[:] = [*requests, *warmup]
    n = len(requests)
    pool = ProcessPoolExecutor(clients, mp_context=multiprocessing.get_context("fork"))
    try:
        for server in servers.values():
            send_load(
                pool, server.url + "/predict", list(range(n, len(_LOAD))), concurrency, clients
            )
        before = {mb: batch_histogram(s.metrics()) for mb, s in servers.items()}
        results: dict[int, list] = {mb: [] for mb in servers}
        seconds = dict.fromkeys(servers, 0.0)
        size = -(-n // rounds)
        order = list(servers)
        for r in range(rounds):
            chunk = list(range(r * size, min(n, (r + 1) * size)))
            for mb in order if r % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                url = servers[mb].url + "/predict"
                results[mb] += send_load(pool, url, chunk, concurrency, clients)
                seconds[mb] += time.perf_counter() - start
    finally:
        pool.shutdown()
    rows = {}
    for mb, server in servers.items():
        after = batch_histogram(server.metrics())
        hist = {k: after[k] - before[mb].get(k, 0) for k in after}
        rows[mb] = summarize(results[mb], seconds[mb], {k: v for k, v in hist.items() if v > 0})
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


def run_serve_bench(opts: argparse.Namespace) -> dict[str, Any]:
    from longmm.deploy.runfolder import load_served_run

    run = _trained_run(opts)
    served = load_served_run(run)
    model, modalities = served.name, served.modalities
    del served
    requests = build_requests(
        model, modalities, opts.requests, opts.malformed, opts.seed, opts.text_sentences
    )
    warmup = [
        r
        for r in build_requests(
            model, modalities, opts.warmup, 0.0, opts.seed + 1, opts.text_sentences
        )
        if r.malformed is None
    ]
    out_json = Path(opts.json)
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
        measured = measure(servers, requests, warmup, opts.concurrency, opts.rounds, opts.clients)
        alive = {mb: s.alive() for mb, s in servers.items()}
    finally:
        codes = {mb: s.stop() for mb, s in servers.items()}
    rows = []
    for max_batch in configs:
        row = measured[max_batch]
        row = {
            "max_batch": max_batch,
            "batch_timeout_ms": opts.batch_timeout_ms if max_batch > 1 else 0.0,
            **row,
            "exit_code": codes[max_batch],
            "crashed": (not alive[max_batch])
            or codes[max_batch] != 0
            or row["connection_errors"] > 0,
            "server_command": shlex.join(["longmm", *servers[max_batch].command[3:]]),
        }
        rows.append(row)
        print(
            f"  max_batch {max_batch}: {row['throughput_rps']} req/s, p50 {row['p50_ms']} ms, "
            f"p99 {row['p99_ms']} ms, codes {row['status_counts']}, "
            f"batches {row['batch_size_histogram']}",
            flush=True,
        )
    one, dyn = rows
    five_xx = sum(
        v for r in rows for k, v in r["status_counts"].items() if k.isdigit() and k[0] == "5"
    )
    checks = {
        "zero_5xx": five_xx == 0,
        "no_crash": not any(r["crashed"] for r in rows),
        "malformed_all_4xx": all(not r["malformed_not_4xx"] for r in rows),
        "throughput_ratio": round(dyn["throughput_rps"] / one["throughput_rps"], 2),
        "p99_ratio": round(dyn["p99_ms"] / one["p99_ms"], 2),
    }
    checks["met"] = (
        checks["zero_5xx"]
        and checks["no_crash"]
        and checks["malformed_all_4xx"]
        and checks["throughput_ratio"] >= 3.0
        and checks["p99_ratio"] <= 2.0
    )
    result = {
        "rows": rows,
        "checks": checks,
        "model": {"run": str(run), "name": model, "modalities": modalities},
        "load": {
            "requests": opts.requests,
            "concurrency": opts.concurrency,
            "malformed_share": opts.malformed,
            "malformed_kinds": list(MALFORMED_KINDS),
            "warmup_requests": len(warmup),
            "interleaved_rounds": opts.rounds,
            "text_sentences": opts.text_sentences,
            "server_torch_threads": opts.threads,
            "api_servers": opts.api_servers,
            "client_processes": opts.clients,
        },
        "machine": MACHINE,
        "command": "longmm bench serve " + " ".join(shlex.quote(a) for a in opts.argv),
    }
    atomic_write_json(out_json, result)
    print(f"[bench serve] {json.dumps(checks)}\nwrote {out_json}", flush=True)
    return result

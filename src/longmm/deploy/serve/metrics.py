"""Server metrics in Prometheus text format, with ``prometheus_client``.

The server runs in several processes (the HTTP server, one or more inference workers), so the
metrics use ``prometheus_client``'s multiprocess mode: every process writes its samples to
memory-mapped files in one folder (``PROMETHEUS_MULTIPROC_DIR``, set by ``longmm serve`` before
any process starts) and ``/metrics`` sums them. Without that variable (in a test, in one
process) the metrics live in the process's own registry.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import cache
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class ServerMetrics:
    requests: Any  # Counter, by endpoint and HTTP status code
    errors: Any  # Counter of 4xx and 5xx answers, by endpoint and code
    latency: Any  # Histogram of seconds from a request's arrival to its answer, by endpoint
    in_flight: Any  # Gauge of requests being answered now
    batch_size: Any  # Histogram of inputs per model call, by model
    batch_seconds: Any  # Histogram of seconds per model call (batch preparation included)


@cache
def server_metrics() -> ServerMetrics:
    """The metrics, created once per process (after ``PROMETHEUS_MULTIPROC_DIR`` is set:
    ``prometheus_client`` chooses its storage when it is first imported, hence the late
    imports)."""
    from prometheus_client import Counter, Gauge, Histogram

    return ServerMetrics(
        requests=Counter("longmm_requests_total", "HTTP requests answered", ["endpoint", "code"]),
        errors=Counter(
            "longmm_errors_total", "HTTP requests answered with a 4xx or 5xx", ["endpoint", "code"]
        ),
        latency=Histogram(
            "longmm_request_latency_seconds",
            "Time to answer a request",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
        ),
        in_flight=Gauge(
            "longmm_requests_in_flight", "Requests being answered", multiprocess_mode="livesum"
        ),
        batch_size=Histogram(
            "longmm_batch_size", "Inputs per model call", ["model"], buckets=BATCH_BUCKETS
        ),
        batch_seconds=Histogram(
            "longmm_batch_seconds",
            "Time per model call, batch preparation included",
            ["model"],
            buckets=LATENCY_BUCKETS,
        ),
    )


def render() -> tuple[bytes, str]:
    """The exposition text of every process's metrics, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    folder = os.environ.get(MULTIPROC_ENV)
    if folder:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=folder)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    server_metrics()
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts and times every HTTP request by endpoint (pure ASGI, so bodies stream
    through); ``endpoints`` are counted by name, any other path as ``other``."""

    def __init__(self, app: Any, endpoints: tuple[str, ...]) -> None:
        self.app = app
        self.endpoints = endpoints

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = server_metrics()
        path = scope.get("path", "")
        endpoint = path if path in self.endpoints else "other"
        status = 500
        start = time.perf_counter()

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            metrics.in_flight.dec()
            code = str(status)
            metrics.requests.labels(endpoint=endpoint, code=code).inc()
            if status >= 400:
                metrics.errors.labels(endpoint=endpoint, code=code).inc()
            metrics.latency.labels(endpoint=endpoint).observe(time.perf_counter() - start)

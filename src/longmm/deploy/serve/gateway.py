"""The HTTP side of ``longmm serve``, put in front of LitServe through its public
``middlewares`` option (LitServe's documented place for input validation, authentication and
response transformation).

:class:`Gateway` is that middleware. It answers every HTTP request with longmm's own FastAPI
app (:mod:`longmm.deploy.serve.routes`): the page, ``/health``, ``/models``, ``/metrics``,
``/read``, the docs, and ``/predict``, whose input is checked and prepared here. Only a
prepared ``/predict`` reaches LitServe: :class:`LitServeApp` calls LitServe's own app (the
ASGI app below the middleware: its ``/predict`` route, which queues the request for the
batching workers) in process, with a body in our wire format, and waits at most the
request's timeout. LitServe's lifespan (its answer consumer) still runs: lifespan messages
pass straight through to it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from longmm.deploy.runfolder import InputError, ServedRun
from longmm.deploy.serve.metrics import MetricsMiddleware
from longmm.deploy.serve.options import ServeOptions
from longmm.deploy.serve.worker import PING

PREDICT_PATH = "/predict"  # LitServe's route for ClassifierAPI (its default api_path)
HEALTH_PATH = "/health"  # LitServe's health route: every worker set up


class LitServeApp:
    """LitServe's own ASGI app, called in process with a request we build."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def call(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 0),
            "server": ("127.0.0.1", 0),
        }
        sent = False
        status, chunks = 500, []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # no disconnect: the caller's timeout ends a wait
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return status, b"".join(chunks)

    async def predict(self, job: bytes, timeout_s: float) -> bytes:
        """The worker's answer (JSON bytes) to one prepared job; a 504 past ``timeout_s``
        (a dead worker's requests end here too: LitServe replaces the worker, but cannot
        answer what it held)."""
        try:
            status, body = await asyncio.wait_for(self.call("POST", PREDICT_PATH, job), timeout_s)
        except TimeoutError as err:
            raise InputError("request", f"no answer within {timeout_s:g} s", 504) from err
        if status == 504:  # LitServe's own queue timeout
            raise InputError("request", "waited too long for an inference worker", 504)
        if status != 200:
            raise RuntimeError(f"inference failed: LitServe answered {status}: {body[:200]!r}")
        return body

    async def ready(self, timeout_s: float) -> str | None:
        """``None`` when every worker is set up and one answers a ping within
        ``timeout_s``; else why not."""
        status, _ = await self.call("GET", HEALTH_PATH)
        if status != 200:
            return "the inference workers are starting"
        try:
            await self.predict(json.dumps(PING).encode(), timeout_s)
        except (InputError, RuntimeError):
            return f"no inference worker answered within {timeout_s:g} s"
        return None


class Gateway:
    """The middleware LitServe installs (``middlewares=[(Gateway, {...})]``); built in each
    HTTP server process, after the fork."""

    def __init__(self, app: Any, runs: dict[str, ServedRun], options: ServeOptions) -> None:
        from longmm.deploy.serve.routes import ENDPOINTS, build_front_app

        self.litserve = LitServeApp(app)
        self.front = MetricsMiddleware(build_front_app(runs, options, self.litserve), ENDPOINTS)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self.front(scope, receive, send)
        else:  # lifespan (LitServe's answer consumer starts there), websockets (none)
            await self.litserve.app(scope, receive, send)

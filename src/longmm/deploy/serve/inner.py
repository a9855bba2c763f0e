"""Calls into LitServe's own app, in process: the ASGI app below our middleware, whose
``/predict`` route (LitServe's, for :class:`~longmm.deploy.serve.worker.ClassifierAPI`) queues a
prepared job for the batching workers, and whose ``/health`` route says whether every worker
is set up. The request is built here (our wire format, loopback addresses) and the answer
collected; a timeout bounds every wait. (A wait given up leaves LitServe's small record of
the request behind until its answer comes, if ever: LitServe has no public way to cancel a
request, and the leak is bounded by the requests that time out.)"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from longmm.deploy.runfolder import InputError
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

"""The HTTP side of ``longmm serve``, put in front of LitServe through its public
``middlewares`` option (LitServe's documented place for input validation, authentication and
response transformation).

:class:`Gateway` is that middleware. It answers every HTTP request with longmm's own FastAPI
app (:mod:`longmm.deploy.serve.routes`): the page, ``/health``, ``/models``, ``/metrics``,
``/read``, the docs, and ``/predict``, whose input is checked and prepared here. Only a
prepared ``/predict`` reaches LitServe: :class:`~.inner.LitServeApp` calls LitServe's own app (the
ASGI app below the middleware: its ``/predict`` route, which queues the request for the
batching workers) in process, with a body in our wire format, and waits at most the
request's timeout. LitServe's lifespan (its answer consumer) still runs: lifespan messages
pass straight through to it.
"""

from __future__ import annotations

from typing import Any

from longmm.deploy.runfolder import ServedRun
from longmm.deploy.serve.inner import LitServeApp
from longmm.deploy.serve.metrics import MetricsMiddleware
from longmm.deploy.serve.options import ServeOptions
from longmm.deploy.serve.routes import ENDPOINTS, build_front_app


class Gateway:
    """The middleware LitServe installs (``middlewares=[(Gateway, {...})]``); built in each
    HTTP server process, after the fork."""

    def __init__(self, app: Any, runs: dict[str, ServedRun], options: ServeOptions) -> None:
        self.litserve = LitServeApp(app)
        self.front = MetricsMiddleware(build_front_app(runs, options, self.litserve), ENDPOINTS)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self.front(scope, receive, send)
        else:  # lifespan (LitServe's answer consumer starts there), websockets (none)
            await self.litserve.app(scope, receive, send)

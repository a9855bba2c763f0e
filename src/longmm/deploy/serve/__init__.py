"""``longmm serve RUN_DIR [RUN_DIR ...]``: trained classifiers behind an HTTP API, on
LitServe's public API.

Processes: the main one starts LitServe's inference workers (``--workers`` per device; each
loads every run's model once and batches requests dynamically: up to ``--max-batch`` inputs
gathered for at most ``--batch-timeout-ms``) and its HTTP servers (FastAPI on uvicorn).

Endpoints: ``GET /`` (the web page), ``GET /health``, ``GET /models``, ``POST /predict``,
``POST /read``, ``GET /metrics`` (Prometheus text), ``GET /docs`` and ``/openapi.json``. With
``--api-key`` (or ``LONGMM_API_KEY``) the API endpoints and the metrics need the key
(``X-API-Key: KEY`` or ``Authorization: Bearer KEY``), else 401; the page, ``/health`` and the
docs stay open. Every error is ``{"error": {"status", "field", "message"}}``.

One job per module:

- :mod:`.options` the options (and the command line derived from them);
- :mod:`.inputs` request bodies, fields, base64, and their limits;
- :mod:`.worker` the inference workers and the dynamic batches (a LitServe ``LitAPI``);
- :mod:`.gateway` the middleware in front of LitServe; :mod:`.inner` calls into its app;
- :mod:`.routes` the HTTP routes and the one error body;
- :mod:`.read` ``POST /read`` (long documents) and its bounds;
- :mod:`.metrics` Prometheus metrics across processes;
- :mod:`.connections` closing connections that never send a request;
- :mod:`.server` the server's lifetime; ``web/`` the page.
"""

from __future__ import annotations

import logging

from longmm.deploy.serve.options import ServeOptions, build_parser, options_from_args

__all__ = ["ServeOptions", "main", "serve"]


def serve(run_dirs: list[str], options: ServeOptions) -> None:
    """Load the runs, start the server, block until SIGTERM / Ctrl+C."""
    from longmm.deploy.serve.server import serve as run_server

    run_server(run_dirs, options)


def main(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    options = options_from_args(args)
    logging.getLogger("litserve").setLevel(getattr(logging, options.log_level.upper()))
    serve(args.runs, options)
    print("server stopped", flush=True)

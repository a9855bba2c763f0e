"""The server's lifetime: load the runs, start LitServe (its inference workers and its
uvicorn HTTP servers, our :class:`~longmm.deploy.serve.gateway.Gateway` in front), stop on
SIGTERM or Ctrl+C.

Only LitServe's public API is used: ``LitAPI`` with its batching options, ``LitServer`` with
``middlewares``, ``timeout`` and ``restart_workers`` (a dead inference worker is replaced;
the requests it held get a 504 from the gateway's timeout), and ``run`` with uvicorn's own
options for the connections (``timeout_keep_alive`` closes idle keep-alive connections,
``limit_concurrency`` answers 503 past a number of open connections and requests, ``http``
takes :mod:`.connections`' protocol, which closes a new connection that sends no request).
SIGTERM is handled like Ctrl+C, LitServe's documented way to stop: the HTTP servers stop
accepting and finish the requests in flight (uvicorn's graceful shutdown, workers still up),
then the workers stop (LitServe waits up to 30 s for the HTTP servers).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import tempfile
from pathlib import Path
from typing import Any

import litserve as ls

from longmm.deploy.runfolder import ServedRun, load_served_run
from longmm.deploy.serve.connections import protocol_class
from longmm.deploy.serve.gateway import Gateway
from longmm.deploy.serve.metrics import MULTIPROC_ENV
from longmm.deploy.serve.options import ALLOWED_HOSTS, ServeOptions
from longmm.deploy.serve.worker import ClassifierAPI
from longmm.errors import LongmmError

logger = logging.getLogger(__name__)


def check_options(options: ServeOptions) -> None:
    if options.host not in ALLOWED_HOSTS:
        raise LongmmError(f"--host must be one of {', '.join(ALLOWED_HOSTS)}, got {options.host}")
    if not 1024 <= options.port <= 65535:
        raise LongmmError(f"--port must be in 1024..65535, got {options.port}")
    counts = (options.max_batch, options.workers, options.api_servers, options.max_concurrent_reads)
    if min(counts) < 1:
        raise LongmmError(
            "--max-batch, --workers, --api-servers and --max-concurrent-reads must be >= 1"
        )
    if options.batch_timeout_ms / 1000.0 >= options.timeout_s:
        raise LongmmError("--batch-timeout-ms must be shorter than --timeout")


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise LongmmError(f"cannot listen on {host}:{port} ({err.strerror})") from err


def _raise_open_file_limit() -> None:
    """The soft limit on open files up to the hard one: every connection is a file, and a
    crowd of idle ones must not use up a soft limit of 1024 while the hard one allows more."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass  # not POSIX, or not allowed: keep the limit as it is


def _load_preprocessing(run_dirs: list[str], names: list[str], options: ServeOptions) -> dict:
    runs: dict[str, ServedRun] = {}
    for path, name in zip(run_dirs, names, strict=True):
        run = load_served_run(path, options.limits, name=name)
        run.model = None  # the workers load their own copy; here only preprocessing
        runs[name] = run
    return runs


def build_server(run_dirs: list[str], names: list[str], options: ServeOptions) -> Any:
    runs = _load_preprocessing(run_dirs, names, options)
    api = ClassifierAPI(
        [str(Path(p).resolve()) for p in run_dirs],
        names,
        max_batch_size=options.max_batch,
        batch_timeout=options.batch_timeout_ms / 1000.0,
    )
    return ls.LitServer(
        api,
        accelerator=options.accelerator,
        workers_per_device=options.workers,
        timeout=options.timeout_s,
        middlewares=[(Gateway, {"runs": runs, "options": options})],
        restart_workers=True,
    )


def _stop_like_ctrl_c(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def serve(run_dirs: list[str], options: ServeOptions) -> None:
    """Load the runs, start the server, block until SIGTERM / Ctrl+C."""
    check_options(options)
    _check_port_free(options.host, options.port)
    names = [Path(p).resolve().name for p in run_dirs]
    if len(set(names)) != len(names):
        raise LongmmError(f"two runs share a folder name: {names}; model names must differ")
    _raise_open_file_limit()
    # Every process writes its metrics in one folder; set before any of them starts.
    metrics_dir = tempfile.mkdtemp(prefix="longmm-metrics-")
    before = os.environ.get(MULTIPROC_ENV)
    os.environ[MULTIPROC_ENV] = metrics_dir
    try:
        server = build_server(run_dirs, names, options)
        signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
        shown = "localhost" if options.host in ("127.0.0.1", "::") else options.host
        print(
            f"serving {', '.join(names)} at http://{shown}:{options.port}/ "
            f"(API docs at /docs; max batch {options.max_batch}, "
            f"{options.batch_timeout_ms:g} ms batch timeout"
            f"{', API key required' if options.api_key else ''})",
            flush=True,
        )
        server.run(
            host=options.host,
            port=options.port,
            num_api_servers=options.api_servers,
            log_level=options.log_level,
            generate_client_file=False,
            # uvicorn's: when on, it formats an access-log line for every response
            access_log=options.log_level in ("info", "debug"),
            timeout_keep_alive=options.keep_alive_s,
            limit_concurrency=options.max_connections,
            http=protocol_class(options.head_timeout_s),
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        if before is None:  # the folder is gone: a later server in this process makes its own
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = before

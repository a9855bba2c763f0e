"""``longmm serve RUN_DIR [RUN_DIR ...]``: trained classifiers behind an HTTP API, on LitServe.

Processes: the main one starts LitServe's inference workers (``--workers`` per device; each
loads every run's model once and batches requests dynamically: up to ``--max-batch`` inputs
gathered for at most ``--batch-timeout-ms``) and one HTTP server (FastAPI on uvicorn).

Requests are checked where they arrive, in the HTTP server, before they reach a batch: a batch
fails as a whole in LitServe, so one bad input must never get that far. Parsing, decoding
and limits (request bytes, image pixels, audio seconds, text tokens) there give a 4xx JSON
error that names the field; the inference workers only see inputs that are already valid
arrays.

Endpoints: ``GET /`` (the web page), ``GET /health``, ``GET /models``, ``POST /predict``,
``POST /read``, ``GET /metrics`` (Prometheus text), ``GET /docs`` and ``/openapi.json``. With
``--api-key`` (or ``LONGMM_API_KEY``) the API endpoints and the metrics need the key
(``X-API-Key: KEY`` or ``Authorization: Bearer KEY``), else 401; the page, ``/health`` and the
docs stay open. SIGTERM (or Ctrl+C) stops accepting connections, answers the requests in
flight, then stops the workers.

The fixed cost of one request (what dynamic batching cannot share) is kept low, as profiling
the HTTP server under load showed it dominated: requests reach the workers through a pipe
(:class:`RequestQueue`) rather than LitServe's ``Manager`` queue, whose every put is a
blocking round trip to a manager process, and answers come back over ZeroMQ; a prepared
request is handed over by :class:`Dispatcher`, not LitServe's request handler, whose debug
log line formats the whole payload (numpy's repr) on every request even with debug logging
off; a small input is prepared in the event loop (a thread-pool hop costs more than the
work); the answer is encoded once, without FastAPI's ``jsonable_encoder``; uvicorn's access
log is off unless ``--log-level`` is info or debug.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hmac
import itertools
import json
import logging
import multiprocessing as mp
import os
import pickle
import queue
import shutil
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import litserve as ls
import zmq
from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from litserve.server import RegularRequestHandler
from litserve.transport.zmq_queue import AsyncConsumer, Broker, Producer
from litserve.transport.zmq_transport import ZMQTransport
from litserve.utils import LitAPIStatus, ResponseBufferItem
from starlette.concurrency import run_in_threadpool

from longmm.deploy.metrics import render, server_metrics
from longmm.deploy.runfolder import InputError, Limits, ServedRun, load_served_run
from longmm.errors import LongmmError

WEB_DIR = Path(__file__).parent / "web"
ALLOWED_HOSTS = ("127.0.0.1", "0.0.0.0", "::")
API_KEY_ENV = "LONGMM_API_KEY"
PREDICT_FIELDS = ("model", "text", "image", "audio")
READ_FIELDS = ("question", "text", "document", "filename", "top_k", "include_text")
ENDPOINTS = ("/", "/health", "/models", "/predict", "/read", "/metrics", "/docs", "/openapi.json")
# Inputs up to this many bytes (characters of text) are prepared in the event loop: for them a
# thread-pool hop (~35 us of CPU, and a wake-up) costs more than decoding and tokenizing.
INLINE_PREPARE_BYTES = 8 * 1024
# A request up to this many bytes (pickled) is written to the workers' pipe by the event loop
# itself; a bigger one by a thread, as the pipe may be full until a worker reads.
INLINE_PUT_BYTES = 16 * 1024
PIPE_BYTES = 1024 * 1024  # the pipe's buffer, where Linux lets us set it

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    api_servers: int = 1
    max_batch: int = 32
    batch_timeout_ms: float = 10.0
    api_key: str | None = None
    limits: Limits = field(default_factory=Limits)
    timeout_s: float = 30.0
    grace_s: float = 30.0
    log_level: str = "warning"
    accelerator: str = "auto"
    read_strategy: str = "hybrid"


# ---- inference workers ----------------------------------------------------------------------


class ClassifierAPI(ls.LitAPI):
    """Every run's model in one worker; a batch may mix models and modalities (each model's
    inputs are grouped by the modalities they hold and run together)."""

    def __init__(self, runs: list[str], names: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run_paths = runs
        self.names = names

    def setup(self, device: str) -> None:
        self.runs = {
            name: load_served_run(path, device=device, name=name)
            for path, name in zip(self.run_paths, self.names, strict=True)
        }

    def decode_request(self, request: dict) -> dict:
        return request  # checked and prepared by the HTTP server

    def predict(self, x: Any) -> Any:
        requests = x if isinstance(x, list) else [x]
        metrics = server_metrics()
        outputs: list[dict | None] = [None] * len(requests)
        by_model: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            by_model.setdefault(request["model"], []).append(i)
        for name, indices in by_model.items():
            start = time.perf_counter()
            results = self.runs[name].predict([requests[i]["items"] for i in indices])
            metrics.batch_size.labels(model=name).observe(len(indices))
            metrics.batch_seconds.labels(model=name).observe(time.perf_counter() - start)
            for i, result in zip(indices, results, strict=True):
                result["batch_size"] = len(indices)
                outputs[i] = result
        return outputs if isinstance(x, list) else outputs[0]

    def batch(self, inputs: list[dict]) -> list[dict]:
        return inputs

    def unbatch(self, output: list[dict]) -> list[dict]:
        return output

    def encode_response(self, output: dict) -> dict:
        return output


# ---- request parsing (HTTP server) ----------------------------------------------------------


def _decode_base64(field: str, value: Any) -> bytes:
    if not isinstance(value, str):
        raise InputError(field, f"must be a base64 string, got {type(value).__name__}")
    if value.startswith("data:"):  # a data URL, as a browser's FileReader gives
        _, _, value = value.partition(",")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as err:
        raise InputError(field, f"not valid base64 ({err})") from err
    if not data:
        raise InputError(field, "is empty")
    return data


async def read_body(request: Any, limit: int) -> bytes:
    """The request body, refused with 413 once it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError as err:
            raise InputError("Content-Length", f"not a number: {declared!r}", 400) from err
        if size > limit:
            if size <= 4 * limit:
                # Read (and drop) a moderately oversized body before answering: a client still
                # sending it would otherwise see its connection reset instead of the 413.
                async for _ in request.stream():
                    pass
            raise InputError("request body", f"{size} bytes, over the limit of {limit}", 413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise InputError("request body", f"over the limit of {limit} bytes", 413)
    return bytes(body)


async def read_fields(request: Any, limit: int, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The request's fields from a JSON object or a multipart / urlencoded form: strings,
    and for uploaded files their bytes (a file upload is named by its form field)."""
    from starlette.datastructures import UploadFile

    body = await read_body(request, limit)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/x-www-form-urlencoded" and body.lstrip()[:1] in (b"{", b"["):
        ctype = "application/json"  # JSON sent without its type (curl -d does this)
    if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=8, max_fields=32)
        except Exception as err:  # starlette's MultiPartException and parser errors
            raise InputError("request body", f"not a valid {ctype} form ({err})", 400) from err
        fields: dict[str, Any] = {}
        upload_name = None
        for key, value in form.multi_items():
            if key in fields:
                raise InputError(key, "given more than once")
            if isinstance(value, UploadFile):
                fields[key] = await value.read()
                if key == "document":
                    upload_name = value.filename
            else:
                fields[key] = value
        if upload_name and "filename" in allowed:
            fields.setdefault("filename", upload_name)
        for key, value in fields.items():
            if key in ("text", "question", "model", "top_k", "include_text") and isinstance(
                value, bytes
            ):
                try:
                    fields[key] = value.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise InputError(key, f"not UTF-8 text ({err})") from err
        _check_known(fields, allowed)
        return fields
    if ctype not in ("application/json", ""):
        raise InputError(
            "Content-Type",
            f"{ctype!r} not accepted; send application/json or multipart/form-data",
            415,
        )
    if not body:
        raise InputError("request body", "is empty; send a JSON object", 400)
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError("request body", f"not valid JSON ({err})", 400) from err
    if not isinstance(payload, dict):
        raise InputError("request body", f"must be a JSON object, got {type(payload).__name__}")
    _check_known(payload, allowed)
    return payload


def _check_known(fields: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise InputError(unknown[0], f"unknown field (known: {', '.join(allowed)})")


def raw_inputs(fields: dict[str, Any], run: ServedRun) -> dict[str, Any]:
    """``{modality: str | bytes}`` from parsed fields: base64 in JSON, bytes in a form."""
    raw: dict[str, Any] = {}
    if fields.get("text") is not None:
        raw["text"] = fields["text"]
    for modality in ("image", "audio"):
        value = fields.get(modality)
        if value is None or value == "":
            continue
        raw[modality] = value if isinstance(value, bytes) else _decode_base64(modality, value)
    return raw


# ---- handing a request to the workers --------------------------------------------------------


class RequestQueue:
    """The pipe from the HTTP servers to the inference workers, with the calls LitServe's
    worker loops make (``get(timeout=...)``, ``get_nowait``, raising ``queue.Empty``).

    A ``put`` writes at once, in the caller's thread: ``multiprocessing.Queue`` hands the item
    to a feeder thread instead, which must then win the GIL from a busy event loop (measured:
    put-to-get latency with the loop busy 300 us per request, p50 0.63 ms and p99 5-145 ms
    through the feeder, 0.01 ms and 1.5-2 ms written at once). LitServe's own ``Manager``
    queue is slower still: every put and get is a blocking round trip to a manager process
    (69 vs 2 us per put, 135 vs 38 us per item end to end, on an idle core). Inherited by
    the workers (spawned) and the HTTP servers (forked); messages are whole (one lock per
    end), so several HTTP servers may write and several workers read."""

    def __init__(self) -> None:
        context = mp.get_context("spawn")
        self._reader, self._writer = context.Pipe(duplex=False)
        self._rlock = context.Lock()
        self._wlock = context.Lock()
        try:
            import fcntl

            fcntl.fcntl(self._writer.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except (ImportError, AttributeError, OSError):
            pass  # not Linux, or over /proc/sys/fs/pipe-max-size: the default buffer

    def __getstate__(self) -> tuple[Any, ...]:
        mp.context.assert_spawning(self)
        return (self._reader, self._writer, self._rlock, self._wlock)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self._reader, self._writer, self._rlock, self._wlock = state

    def put_bytes(self, data: bytes) -> None:
        with self._wlock:
            self._writer.send_bytes(data)

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        self.put_bytes(pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL))

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if block and timeout is None:
            with self._rlock:
                data = self._reader.recv_bytes()
            return pickle.loads(data)
        deadline = time.monotonic() + (timeout or 0.0)
        if not self._rlock.acquire(block, timeout):
            raise queue.Empty
        try:
            wait = max(0.0, deadline - time.monotonic()) if block else 0.0
            if not self._reader.poll(wait):
                raise queue.Empty
            data = self._reader.recv_bytes()
        finally:
            self._rlock.release()
        return pickle.loads(data)

    def get_nowait(self) -> Any:
        return self.get(False)


class Dispatcher:
    """Puts one prepared request on the inference workers' queue and waits for its answer, as
    LitServe's ``RegularRequestHandler.handle_request`` does (same queue, response buffer and
    error handling), without its per-request costs: its ``logger.debug(f"...{request}")``
    formats the payload's numpy arrays (~0.8 ms for one 28x28 image) even with debug logging
    off, and a ``uuid4`` reads the OS's random source (a counter is unique enough: the ids only
    need to differ within this HTTP process, which owns its response buffer)."""

    def __init__(self, server: Any, lit_api: Any) -> None:
        self.server = server
        self.api_path = lit_api.api_path
        self._ids = itertools.count()

    async def __call__(self, payload: dict[str, Any]) -> Any:
        server = self.server
        uid = f"{os.getpid()}-{next(self._ids)}"
        item = ResponseBufferItem(asyncio.Event())
        server.response_buffer[uid] = item
        try:
            requests = server._get_request_queue(self.api_path)
            message = (server.app.response_queue_id, uid, time.monotonic(), payload)
            if not isinstance(requests, RequestQueue):
                requests.put(message)
            else:
                data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
                if len(data) <= INLINE_PUT_BYTES:
                    requests.put_bytes(data)
                else:
                    await run_in_threadpool(requests.put_bytes, data)
            await item.event.wait()
        except Exception as err:
            logger.error("could not hand request %s to the inference workers: %s", uid, err)
            raise HTTPException(status_code=500, detail="Internal server error") from err
        finally:
            server.response_buffer.pop(uid, None)
        response, status = item.response
        if status == LitAPIStatus.ERROR:
            RegularRequestHandler._handle_error_response(response)  # raises HTTPException
        return response


# ---- the app --------------------------------------------------------------------------------


class MetricsMiddleware:
    """Counts and times every HTTP request (pure ASGI, so the body streams through)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = server_metrics()
        path = scope.get("path", "")
        endpoint = path if path in ENDPOINTS else "other"
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


def _error_response(status: int, field: str, message: str) -> Any:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    body = {"error": {"status": status, "field": field, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def _openapi_body(properties: dict[str, Any], file_fields: tuple[str, ...]) -> dict[str, Any]:
    form = {
        k: ({"type": "string", "format": "binary"} if k in file_fields else v)
        for k, v in properties.items()
    }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"type": "object", "properties": properties}},
                "multipart/form-data": {"schema": {"type": "object", "properties": form}},
            },
        }
    }


PREDICT_SCHEMA = {
    "model": {"type": "string", "description": "a loaded model's name (see GET /models)"},
    "text": {"type": "string", "description": "text, for a model that reads text"},
    "image": {"type": "string", "description": "an encoded image (PNG, JPEG), base64 in JSON"},
    "audio": {"type": "string", "description": "an encoded clip (WAV, FLAC, OGG), base64"},
}
READ_SCHEMA = {
    "question": {"type": "string"},
    "text": {"type": "string", "description": "the document as text"},
    "document": {"type": "string", "description": "a document file (txt, md, html, pdf)"},
    "top_k": {"type": "integer", "description": "evidence passages to return"},
    "include_text": {
        "type": "boolean",
        "description": "also return the document's text (document_text) for highlighting",
    },
}


def build_app(server: Any, runs: dict[str, ServedRun], options: ServeOptions) -> Any:
    """Replace LitServe's generic routes with longmm's: page, health, models, predict, read,
    metrics; errors as JSON that names the field."""
    app = server.app
    app.title = "longmm serve"
    app.description = "Trained longmm classifiers (and the long-document reader) over HTTP."
    replaced = {"/", "/health", "/info", "/predict"}
    app.router.routes = [r for r in app.router.routes if getattr(r, "path", None) not in replaced]
    dispatch = Dispatcher(server, server.lit_api)
    limits = options.limits

    async def require_key(request: Request) -> None:
        if options.api_key is None:
            return
        given = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if given is None and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if given is None or not hmac.compare_digest(given.encode(), options.api_key.encode()):
            what = "missing" if given is None else "wrong"
            raise InputError("X-API-Key", f"{what} API key", 401)

    guarded = [Depends(require_key)]

    @app.exception_handler(InputError)
    async def input_error(request: Request, err: InputError) -> Any:
        return _error_response(err.status, err.field, err.message)

    @app.get("/", include_in_schema=False)
    async def page() -> Any:
        return HTMLResponse((WEB_DIR / "index.html").read_text(encoding="utf-8"))

    @app.get("/health", summary="Ready when every inference worker has loaded the models")
    async def health() -> Any:
        statuses = dict(server.workers_setup_status)
        ready = bool(statuses) and all(str(v).endswith("ready") for v in statuses.values())
        body = {"status": "ok" if ready else "starting", "models": sorted(runs)}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/models", dependencies=guarded, summary="The loaded models and what they read")
    async def models() -> Any:
        return {
            "models": [run.describe() for run in runs.values()],
            "read": reader_available(),
            "limits": limits.__dict__,
        }

    @app.get("/metrics", dependencies=guarded, summary="Prometheus metrics")
    async def metrics() -> Any:
        data, ctype = render()
        return Response(data, media_type=ctype)

    @app.post(
        "/predict",
        dependencies=guarded,
        summary="Classify text, an image, audio (or several at once for a fusion model)",
        openapi_extra=_openapi_body(PREDICT_SCHEMA, ("image", "audio")),
    )
    async def predict(request: Request) -> Any:
        fields = await read_fields(request, limits.max_request_bytes, PREDICT_FIELDS)
        name = fields.get("model") or None
        if name is None:
            if len(runs) > 1:
                choices = ", ".join(sorted(runs))
                raise InputError("model", f"several models are loaded; choose one of {choices}")
            name = next(iter(runs))
        if not isinstance(name, str) or name not in runs:
            raise InputError("model", f"unknown model {name!r} (loaded: {', '.join(sorted(runs))})")
        run = runs[name]
        raw = raw_inputs(fields, run)
        size = sum(len(v) for v in raw.values() if isinstance(v, str | bytes))
        if size <= INLINE_PREPARE_BYTES:  # (a value of a wrong type is refused at once)
            items = run.prep.prepare(raw)
        else:
            items = await run_in_threadpool(run.prep.prepare, raw)
        return JSONResponse(await dispatch({"model": name, "items": items}))

    @app.post(
        "/read",
        dependencies=guarded,
        summary="Answer a question about a long document, with evidence and source offsets",
        openapi_extra=_openapi_body(READ_SCHEMA, ("document",)),
    )
    async def read(request: Request) -> Any:
        fields = await read_fields(request, limits.max_request_bytes, READ_FIELDS)
        return await run_in_threadpool(answer_question, fields, options)

    app.add_middleware(MetricsMiddleware)
    return app


# ---- long-document reading ------------------------------------------------------------------


def reader_available() -> bool:
    """Whether this installation has the long-document reader (``longmm.reading``)."""
    try:
        from longmm.reading.reader import RetrievalReader  # noqa: F401
    except ImportError:
        return False
    return True


def answer_question(fields: dict[str, Any], options: ServeOptions) -> dict[str, Any]:
    if not reader_available():
        raise InputError(
            "endpoint",
            "/read needs the long-document reader (longmm.reading.reader), which this "
            "installation does not have",
            501,
        )
    from longmm.deploy.reading import answer

    return answer(fields, options.limits, options.read_strategy)


# ---- the server and its lifetime ------------------------------------------------------------


# ZeroMQ drops what a PUB socket cannot queue past its high-water mark (1000 messages by
# default): an answer lost that way would leave its request waiting for ever. The answers in
# flight are bounded by the requests in flight, so the queues are left unbounded (0).


class _Broker(Broker):
    def _run(self) -> None:
        context = zmq.Context()
        frontend = context.socket(zmq.XPUB)
        backend = context.socket(zmq.XSUB)
        try:
            frontend.setsockopt(zmq.SNDHWM, 0)
            backend.setsockopt(zmq.RCVHWM, 0)
            frontend.bind(self.frontend_address)
            backend.bind(self.backend_address)
            zmq.proxy(frontend, backend)
        except zmq.ZMQError as err:
            logger.error("response broker: %s", err)
        finally:
            frontend.close(linger=0)
            backend.close(linger=0)
            context.term()


class _Producer(Producer):
    def __init__(self, address: str) -> None:
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.PUB)
        self._socket.setsockopt(zmq.SNDHWM, 0)
        self._socket.connect(address)


class _Consumer(AsyncConsumer):
    def _setup_socket(self) -> None:
        import zmq.asyncio

        self._context = zmq.asyncio.Context()
        self._socket = self._context.socket(zmq.SUB)
        self._socket.setsockopt(zmq.RCVHWM, 0)
        self._socket.connect(self.address)
        self._socket.setsockopt_string(zmq.SUBSCRIBE, str(self.consumer_id))


class ResponseTransport(ZMQTransport):
    """Answers from the inference workers to the HTTP servers over ZeroMQ (PUB/SUB through a
    broker thread in the main process), which is what LitServe's ``fast_queue=True`` means
    but, in litserve 0.2.19, does not give: ``TransportConfig(transport_config="zmq")``
    names a field that does not exist, so every answer took the ``Manager`` queue (a blocking
    round trip to the manager process to send it, and a thread-pool hop plus another round
    trip to receive it). Its ``close`` does nothing in a process that never sent or received
    (LitServe's raises there, during shutdown). No queue drops an answer (high-water marks
    off)."""

    def setup(self, operation: Any, consumer_id: int | None = None) -> None:
        if operation == zmq.PUB:
            self._zmq = _Producer(address=self.backend_address)
            self._zmq.wait_for_subscribers()
        elif operation == zmq.SUB:
            self._zmq = _Consumer(consumer_id=consumer_id, address=self.frontend_address)
        else:
            raise ValueError(f"unknown ZeroMQ operation {operation}")

    def close(self, **kwargs: Any) -> None:
        if self._zmq is not None:
            self._zmq.close()

    def __reduce__(self) -> Any:
        return ResponseTransport, (self.backend_address, self.frontend_address)


class LongmmServer(ls.LitServer):
    """LitServer that drains on SIGTERM: HTTP servers first (uvicorn stops accepting and
    finishes the requests in flight, with the workers still up), then the workers."""

    http_workers: dict[Any, Any] | None = None

    def _init_manager(self, num_api_servers: int) -> Any:
        """LitServe's, with each request queue a :class:`RequestQueue` (a pipe) instead of a
        ``Manager`` queue proxy, and answers over ZeroMQ (:class:`ResponseTransport`). Both
        are created before the workers start, so they inherit them."""
        manager = super()._init_manager(num_api_servers)
        for path in list(self.litapi_request_queues):
            self.litapi_request_queues[path] = RequestQueue()
        broker = _Broker()  # a daemon thread: workers publish to its XSUB, HTTP servers
        broker.start()  # subscribe (by their response-queue id) at its XPUB
        self._transport = ResponseTransport(broker.backend_address, broker.frontend_address)
        return manager

    def _start_server(self, *args: Any, **kwargs: Any) -> Any:
        self.http_workers = super()._start_server(*args, **kwargs)
        return self.http_workers

    def drain(self, grace_s: float) -> None:
        for worker in (self.http_workers or {}).values():
            if hasattr(worker, "terminate") and worker.is_alive():
                worker.terminate()  # SIGTERM: uvicorn's graceful shutdown
        deadline = time.monotonic() + grace_s
        for worker in (self.http_workers or {}).values():
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
        if self._shutdown_event is not None:
            self._shutdown_event.set()


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise LongmmError(f"cannot listen on {host}:{port} ({err.strerror})") from err


def serve(run_dirs: list[str], options: ServeOptions) -> None:
    """Load the runs, start the server, block until SIGTERM / Ctrl+C."""
    if options.host not in ALLOWED_HOSTS:
        raise LongmmError(f"--host must be one of {', '.join(ALLOWED_HOSTS)}, got {options.host}")
    if not 1024 <= options.port <= 65535:
        raise LongmmError(f"--port must be in 1024..65535, got {options.port}")
    if min(options.max_batch, options.workers, options.api_servers) < 1:
        raise LongmmError("--max-batch, --workers and --api-servers must be >= 1")
    _check_port_free(options.host, options.port)
    names = [Path(p).resolve().name for p in run_dirs]
    if len(set(names)) != len(names):
        raise LongmmError(f"two runs share a folder name: {names}; model names must differ")
    # Every process writes its metrics in one folder; set before any of them starts.
    metrics_dir = tempfile.mkdtemp(prefix="longmm-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        runs = {}
        for path, name in zip(run_dirs, names, strict=True):
            run = load_served_run(path, options.limits, name=name)
            run.model = None  # the workers load their own copy; here only preprocessing
            runs[name] = run
        api = ClassifierAPI(
            [str(Path(p).resolve()) for p in run_dirs],
            names,
            max_batch_size=options.max_batch,
            batch_timeout=options.batch_timeout_ms / 1000.0,
        )
        server = LongmmServer(
            api,
            accelerator=options.accelerator,
            workers_per_device=options.workers,
            timeout=options.timeout_s,
            fast_queue=True,
        )
        server.uvicorn_graceful_timeout = options.grace_s
        build_app(server, runs, options)

        def on_sigterm(signum: int, frame: Any) -> None:
            threading.Thread(target=server.drain, args=(options.grace_s,), daemon=True).start()

        signal.signal(signal.SIGTERM, on_sigterm)
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
            # when this is on, uvicorn gathers an access-log line's fields (client address,
            # path) and calls the logger for every response, even when the level drops it
            access_log=options.log_level in ("info", "debug"),
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="longmm serve",
        description="Serve trained classifier runs over HTTP (LitServe): a web page at /, "
        "POST /predict, POST /read, GET /health, GET /metrics, API docs at /docs.",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders of longmm fit")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        choices=ALLOWED_HOSTS,
        help="address to listen on (0.0.0.0 or :: opens it to the network) (default: %(default)s)",
    )
    parser.add_argument(
        "--port", type=int, default=8000, help="TCP port to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="inference workers per device (default: %(default)s)"
    )
    parser.add_argument(
        "--api-servers",
        type=int,
        default=1,
        help="HTTP server processes (uvicorn) in front (default: %(default)s)",
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        default=32,
        help="most inputs per model call (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-timeout-ms",
        type=float,
        default=10.0,
        help="longest wait to fill a batch, milliseconds (default: %(default)s)",
    )
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"require this key in the X-API-Key header (default: ${API_KEY_ENV} if set, "
        "else no key)",
    )
    parser.add_argument(
        "--max-request-mb",
        type=float,
        default=Limits.max_request_bytes / 2**20,
        help="largest request body, MiB; larger ones get 413 (default: %(default)s)",
    )
    parser.add_argument(
        "--max-image-pixels",
        type=int,
        default=Limits.max_image_pixels,
        help="most pixels (width x height) in one image (default: %(default)s)",
    )
    parser.add_argument(
        "--max-audio-seconds",
        type=float,
        default=Limits.max_audio_seconds,
        help="longest audio upload, seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--max-text-tokens",
        type=int,
        default=Limits.max_text_tokens,
        help="most tokens in one text input of /predict (default: %(default)s)",
    )
    parser.add_argument(
        "--max-document-tokens",
        type=int,
        default=Limits.max_document_tokens,
        help="most tokens in one document of /read (default: %(default)s)",
    )
    parser.add_argument(
        "--read-strategy",
        default="hybrid",
        choices=("bm25", "dense", "hybrid"),
        help="passage retrieval for POST /read (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="request timeout, seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--accelerator",
        default="auto",
        choices=("auto", "cpu", "cuda", "mps"),
        help="device the models run on (default: %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=("debug", "info", "warning", "error"),
        help="server log level; info and debug log every request (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    limits = Limits(
        max_request_bytes=int(args.max_request_mb * 1024 * 1024),
        max_image_pixels=args.max_image_pixels,
        max_audio_seconds=args.max_audio_seconds,
        max_text_tokens=args.max_text_tokens,
        max_document_tokens=args.max_document_tokens,
    )
    options = ServeOptions(
        host=args.host,
        port=args.port,
        workers=args.workers,
        api_servers=args.api_servers,
        max_batch=args.max_batch,
        batch_timeout_ms=args.batch_timeout_ms,
        api_key=api_key,
        limits=limits,
        timeout_s=args.timeout,
        log_level=args.log_level,
        accelerator=args.accelerator,
        read_strategy=args.read_strategy,
    )
    logging.getLogger("litserve").setLevel(getattr(logging, args.log_level.upper()))
    serve(args.runs, options)
    print("server stopped", flush=True)

"""longmm's HTTP routes (a FastAPI app in each HTTP server process): the web page,
``/health``, ``/models``, ``/metrics``, ``/predict``, ``/read`` and the docs.

Every error, whatever raised it (a bad field, an unknown path or method, a timeout, a bug),
is answered with one documented body: ``{"error": {"status", "field", "message"}}``;
FastAPI's own ``{"detail": ...}`` never leaves the server.
"""

from __future__ import annotations

import hmac
import logging
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from longmm.deploy.runfolder import InputError, ServedRun
from longmm.deploy.serve.inner import LitServeApp
from longmm.deploy.serve.inputs import choose_model, drain, raw_inputs, read_fields
from longmm.deploy.serve.metrics import render
from longmm.deploy.serve.options import ServeOptions
from longmm.deploy.serve.read import ReadGate, answer, reader_available
from longmm.deploy.serve.worker import encode_job

WEB_DIR = Path(__file__).parent / "web"
PREDICT_FIELDS = ("model", "text", "image", "audio")
READ_FIELDS = ("question", "text", "document", "filename", "top_k", "include_text")
ENDPOINTS = ("/", "/health", "/models", "/predict", "/read", "/metrics", "/docs", "/openapi.json")
# Inputs up to this many bytes (characters of text) are prepared in the event loop: for them a
# thread-pool hop (~35 us of CPU, and a wake-up) costs more than decoding and tokenizing.
INLINE_PREPARE_BYTES = 8 * 1024

logger = logging.getLogger(__name__)


def error_response(
    status: int, field: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    body = {"error": {"status": status, "field": field, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers or None)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(InputError)
    async def input_error(request: Request, err: InputError) -> Any:
        return error_response(err.status, err.field, err.message, getattr(err, "headers", None))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> Any:
        field = "path" if err.status_code == 404 else "method" if err.status_code == 405 else ""
        message = str(err.detail)
        if err.status_code in (404, 405):
            message = f"{request.method} {request.url.path}: {message.lower()}"
        return error_response(err.status_code, field or "request", message, err.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError) -> Any:
        return error_response(422, "request", str(err.errors()[:1]))

    @app.exception_handler(Exception)
    async def server_error(request: Request, err: Exception) -> Any:
        logger.exception("error answering %s %s", request.method, request.url.path)
        return error_response(500, "server", f"internal error ({type(err).__name__})")


def _key_check(api_key: str | None) -> Any:
    async def require_key(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if given is None and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if given is None or not hmac.compare_digest(given.encode(), api_key.encode()):
            what = "missing" if given is None else "wrong"
            raise InputError("X-API-Key", f"{what} API key", 401)

    return require_key


def _add_info_routes(
    app: FastAPI, runs: dict[str, ServedRun], options: ServeOptions, litserve: LitServeApp
) -> None:
    guarded = [Depends(_key_check(options.api_key))]

    @app.get("/", include_in_schema=False)
    async def page() -> Any:
        return HTMLResponse((WEB_DIR / "index.html").read_text(encoding="utf-8"))

    @app.get("/health", summary="Ready when every inference worker is set up and answers")
    async def health() -> Any:
        why = await litserve.ready(options.health_timeout_s)
        if why is None:
            return JSONResponse({"status": "ok", "models": sorted(runs)})
        error = {"status": 503, "field": "workers", "message": why}
        body = {"status": "unavailable", "models": sorted(runs), "error": error}
        return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})

    @app.get("/models", dependencies=guarded, summary="The loaded models and what they read")
    async def models() -> Any:
        return {
            "models": [run.describe() for run in runs.values()],
            "read": reader_available(),
            "limits": options.limits.__dict__,
        }

    @app.get("/metrics", dependencies=guarded, summary="Prometheus metrics")
    async def metrics() -> Any:
        data, ctype = render()
        return Response(data, media_type=ctype)


def _add_predict_route(
    app: FastAPI, runs: dict[str, ServedRun], options: ServeOptions, litserve: LitServeApp
) -> None:
    limits = options.limits

    @app.post(
        "/predict",
        dependencies=[Depends(_key_check(options.api_key))],
        summary="Classify text, an image, audio (or several at once for a fusion model)",
        openapi_extra=_openapi_body(PREDICT_SCHEMA, ("image", "audio")),
    )
    async def predict(request: Request) -> Any:
        fields = await read_fields(
            request, limits.max_request_bytes, PREDICT_FIELDS, options.body_timeout_s
        )
        name = choose_model(fields, runs)
        raw = raw_inputs(fields)
        size = sum(len(v) for v in raw.values() if isinstance(v, str | bytes))
        prepare = runs[name].prep.prepare
        if size <= INLINE_PREPARE_BYTES:  # (a value of a wrong type is refused at once)
            items = prepare(raw)
        else:
            items = await run_in_threadpool(prepare, raw)
        answer_bytes = await litserve.predict(encode_job(name, items), options.timeout_s)
        return Response(answer_bytes, media_type="application/json")


def _add_read_route(app: FastAPI, options: ServeOptions) -> None:
    gate = ReadGate(options.max_concurrent_reads, options.read_timeout_s)

    @app.post(
        "/read",
        dependencies=[Depends(_key_check(options.api_key))],
        summary="Answer a question about a long document, with evidence and source offsets",
        openapi_extra=_openapi_body(READ_SCHEMA, ("document",)),
    )
    async def read(request: Request) -> Any:
        if not reader_available():
            raise InputError(
                "endpoint",
                "/read needs the long-document reader (longmm.reading.reader), which this "
                "installation does not have",
                501,
            )
        if gate.busy():  # refused before the body is kept: a queue of uploads is memory
            await drain(request)
            raise gate.refuse()
        fields = await read_fields(
            request, options.limits.max_request_bytes, READ_FIELDS, options.body_timeout_s
        )
        return await gate.run(lambda: _answer(fields, options))


def _answer(fields: dict[str, Any], options: ServeOptions) -> dict[str, Any]:
    try:
        return answer(fields, options.limits, options.read_strategy)
    except RecursionError as err:
        raise InputError("document", "nested too deep to read") from err


def build_front_app(
    runs: dict[str, ServedRun], options: ServeOptions, litserve: LitServeApp
) -> FastAPI:
    app = FastAPI(
        title="longmm serve",
        description="Trained longmm classifiers (and the long-document reader) over HTTP.",
    )
    _add_error_handlers(app)
    _add_info_routes(app, runs, options, litserve)
    _add_predict_route(app, runs, options, litserve)
    _add_read_route(app, options)
    return app


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

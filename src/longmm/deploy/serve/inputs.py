"""Request decoding and its limits, in the HTTP server: a body read up to a byte limit and a
time limit, its fields from JSON or a form, base64 decoded. Every refusal is an
:class:`~longmm.deploy.runfolder.InputError` naming the field and the HTTP status."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from typing import Any

from starlette.requests import Request

from longmm.deploy.runfolder import InputError, ServedRun

# Text fields of a form arrive as bytes when sent as a file part; they are decoded as UTF-8.
TEXT_FORM_FIELDS = ("text", "question", "model", "top_k", "include_text")


def decode_base64(field: str, value: Any) -> bytes:
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


async def _receive_body(request: Request, limit: int) -> bytes:
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
                await drain(request)
            raise InputError("request body", f"{size} bytes, over the limit of {limit}", 413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise InputError("request body", f"over the limit of {limit} bytes", 413)
    return bytes(body)


async def drain(request: Request) -> None:
    """Read and drop what is left of a body (nothing kept in memory)."""
    try:
        async for _ in request.stream():
            pass
    except Exception:  # the client went away: nothing left to drain
        return


async def read_body(request: Request, limit: int, timeout_s: float = 30.0) -> bytes:
    """The request body, refused with 413 once it passes ``limit`` bytes and with 408 when
    it has not all arrived within ``timeout_s`` (a slow or half-sent upload)."""
    try:
        return await asyncio.wait_for(_receive_body(request, limit), timeout_s)
    except TimeoutError as err:
        raise InputError("request body", f"not received within {timeout_s:g} s", 408) from err


def parse_json(body: bytes) -> Any:
    if not body:
        raise InputError("request body", "is empty; send a JSON object", 400)
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError("request body", f"not valid JSON ({err})", 400) from err
    except RecursionError as err:  # the C decoder recurses once per nesting level
        raise InputError("request body", "JSON nested too deep", 400) from err


async def _form_fields(request: Request, body: bytes, ctype: str) -> tuple[dict, str | None]:
    from starlette.datastructures import UploadFile

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
    for key, value in fields.items():
        if key in TEXT_FORM_FIELDS and isinstance(value, bytes):
            try:
                fields[key] = value.decode("utf-8")
            except UnicodeDecodeError as err:
                raise InputError(key, f"not UTF-8 text ({err})") from err
    return fields, upload_name


async def read_fields(
    request: Request, limit: int, allowed: tuple[str, ...], timeout_s: float = 30.0
) -> dict[str, Any]:
    """The request's fields from a JSON object or a multipart / urlencoded form: strings,
    and for uploaded files their bytes (a file upload is named by its form field)."""
    body = await read_body(request, limit, timeout_s)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/x-www-form-urlencoded" and body.lstrip()[:1] in (b"{", b"["):
        ctype = "application/json"  # JSON sent without its type (curl -d does this)
    if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        fields, upload_name = await _form_fields(request, body, ctype)
        if upload_name and "filename" in allowed:
            fields.setdefault("filename", upload_name)
        check_known(fields, allowed)
        return fields
    if ctype not in ("application/json", ""):
        raise InputError(
            "Content-Type",
            f"{ctype!r} not accepted; send application/json or multipart/form-data",
            415,
        )
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise InputError("request body", f"must be a JSON object, got {type(payload).__name__}")
    check_known(payload, allowed)
    return payload


def check_known(fields: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise InputError(unknown[0], f"unknown field (known: {', '.join(allowed)})")


def choose_model(fields: dict[str, Any], runs: dict[str, ServedRun]) -> str:
    """The model a request names, or the only one loaded."""
    name = fields.get("model") or None
    if name is None:
        if len(runs) > 1:
            raise InputError("model", f"several models are loaded; choose one of {_names(runs)}")
        return next(iter(runs))
    if not isinstance(name, str) or name not in runs:
        raise InputError("model", f"unknown model {name!r} (loaded: {_names(runs)})")
    return name


def _names(runs: dict[str, ServedRun]) -> str:
    return ", ".join(sorted(runs))


def raw_inputs(fields: dict[str, Any]) -> dict[str, Any]:
    """``{modality: str | bytes}`` from parsed fields: base64 in JSON, bytes in a form."""
    raw: dict[str, Any] = {}
    if fields.get("text") is not None:
        raw["text"] = fields["text"]
    for modality in ("image", "audio"):
        value = fields.get(modality)
        if value is None or value == "":
            continue
        raw[modality] = value if isinstance(value, bytes) else decode_base64(modality, value)
    return raw

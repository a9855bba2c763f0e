"""What ``longmm serve`` may be told, once: :class:`ServeOptions` (and the request
:class:`~longmm.deploy.runfolder.Limits`) are the only list of options; the command line is
derived from their fields (flag, help and default), so a new option is one field here."""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from longmm.deploy.runfolder import Limits

ALLOWED_HOSTS = ("127.0.0.1", "0.0.0.0", "::")
API_KEY_ENV = "LONGMM_API_KEY"
MIB = 1024 * 1024


def _opt(default: Any, help: str, *, flag: str | None = None, **argparse_kwargs: Any) -> Any:
    """A dataclass field that is also a command-line option (``flag`` when the option's name
    is not the field's, e.g. ``--timeout`` for ``timeout_s``)."""
    meta = {"help": help, "flag": flag, "argparse": argparse_kwargs}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ServeOptions:
    host: str = _opt(
        "127.0.0.1",
        "address to listen on (0.0.0.0 or :: opens it to the network)",
        choices=ALLOWED_HOSTS,
    )
    port: int = _opt(8000, "TCP port to listen on")
    workers: int = _opt(1, "inference workers per device")
    api_servers: int = _opt(1, "HTTP server processes (uvicorn) in front")
    max_batch: int = _opt(32, "most inputs per model call")
    batch_timeout_ms: float = _opt(10.0, "longest wait to fill a batch, milliseconds")
    api_key: str | None = _opt(
        None,
        f"require this key in the X-API-Key header (${API_KEY_ENV} if set, else no key)",
    )
    limits: Limits = field(default_factory=Limits)
    timeout_s: float = _opt(
        30.0, "longest wait for a prediction, seconds; past it a 504", flag="--timeout"
    )
    read_timeout_s: float = _opt(
        120.0, "longest POST /read, seconds; past it a 504", flag="--read-timeout"
    )
    max_concurrent_reads: int = _opt(
        1, "POST /read requests answered at once per HTTP server; more get 503 + Retry-After"
    )
    body_timeout_s: float = _opt(
        30.0,
        "longest time to receive a request body, seconds; past it a 408",
        flag="--body-timeout",
    )
    head_timeout_s: float = _opt(
        10.0,
        "a new connection that has not sent a whole request head by then is closed, seconds",
        flag="--head-timeout",
    )
    keep_alive_s: float = _opt(
        5.0, "an idle keep-alive connection is closed after this, seconds", flag="--keep-alive"
    )
    max_connections: int = _opt(
        4096, "open connections + requests per HTTP server before new requests get 503"
    )
    health_timeout_s: float = _opt(
        5.0,
        "GET /health fails (503) when no inference worker answers within this, seconds",
        flag="--health-timeout",
    )
    log_level: str = _opt(
        "warning",
        "server log level; info and debug log every request",
        choices=("debug", "info", "warning", "error"),
    )
    accelerator: str = _opt(
        "auto", "device the models run on", choices=("auto", "cpu", "cuda", "mps")
    )
    read_strategy: str = _opt(
        "hybrid", "passage retrieval for POST /read", choices=("bm25", "dense", "hybrid")
    )


# Limits are request sizes; the command line says them in friendlier units where it helps.
LIMIT_FLAGS: dict[str, tuple[str, float, str]] = {
    "max_request_bytes": (
        "--max-request-mb",
        MIB,
        "largest request body, MiB; larger ones get 413",
    ),
    "max_image_pixels": ("--max-image-pixels", 1, "most pixels (width x height) in one image"),
    "max_audio_seconds": ("--max-audio-seconds", 1, "longest audio upload, seconds"),
    "max_text_tokens": ("--max-text-tokens", 1, "most tokens in one text input of /predict"),
    "max_document_tokens": (
        "--max-document-tokens",
        1,
        "most tokens in one document of /read",
    ),
}


def _flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _option_type(f: dataclasses.Field) -> Any:
    kind = str(f.type)
    return int if kind == "int" else float if kind == "float" else str


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="longmm serve",
        description="Serve trained classifier runs over HTTP (LitServe): a web page at /, "
        "POST /predict, POST /read, GET /health, GET /metrics, API docs at /docs.",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders of longmm fit")
    for f in dataclasses.fields(ServeOptions):
        if "help" in f.metadata:
            meta = f.metadata
            _add(
                parser, _flag(f), f.name, _option_type(f), f.default, meta["help"], meta["argparse"]
            )
    for f in dataclasses.fields(Limits):
        flag, scale, text = LIMIT_FLAGS[f.name]
        kind = float if scale != 1 else type(f.default)
        _add(parser, flag, f.name, kind, f.default / scale if scale != 1 else f.default, text, {})
    return parser


def _add(
    parser: argparse.ArgumentParser,
    flag: str,
    dest: str,
    kind: Any,
    default: Any,
    text: str,
    extra: dict[str, Any],
) -> None:
    metavar = flag.lstrip("-").replace("-", "_").upper()
    help_text = f"{text} (default: %(default)s)"
    parser.add_argument(
        flag, dest=dest, metavar=metavar, type=kind, default=default, help=help_text, **extra
    )


def options_from_args(args: argparse.Namespace) -> ServeOptions:
    """The parsed command line as options (each limit back in its own unit)."""
    limits = {}
    for f in dataclasses.fields(Limits):
        scale = LIMIT_FLAGS[f.name][1]
        value = getattr(args, f.name)
        limits[f.name] = int(value * scale) if scale != 1 else value
    values = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(ServeOptions)
        if "help" in f.metadata
    }
    values["api_key"] = values["api_key"] or os.environ.get(API_KEY_ENV) or None
    return ServeOptions(**values, limits=Limits(**limits))

"""The load generator of ``longmm bench serve``: plain asyncio HTTP/1.1 keep-alive clients
sending requests encoded beforehand, from one or several processes."""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any


@dataclass
class Request:
    body: bytes
    headers: dict[str, str]
    malformed: str | None = None  # the kind, for a broken request


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """One HTTP/1.1 response off ``reader``: its status, and whether the connection stays
    open. The body is read whole (by Content-Length, chunks, or to the end) and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ValueError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    status = int(parts[1])
    length, chunked, keep = None, False, parts[0] == b"HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value
        elif name == b"connection":
            keep = value != b"close" if keep else value == b"keep-alive"
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)  # the chunk and its CRLF
            if size == 0:
                break
    elif length is not None:
        await reader.readexactly(length)
    else:
        await reader.read()  # to the end: the server closes
        keep = False
    return status, keep


def _wire(host: str, path: str, r: Request) -> bytes:
    """The request as bytes on the wire: request line, Host, the request's own headers,
    Content-Length, then the body."""
    head = [f"POST {path} HTTP/1.1", f"Host: {host}"]
    head += [f"{k}: {v}" for k, v in r.headers.items()]
    head.append(f"Content-Length: {len(r.body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + r.body


async def send_all(
    url: str, requests: list[Request], concurrency: int
) -> list[tuple[Request, int | str, float]]:
    """Send ``requests`` over ``concurrency`` keep-alive HTTP/1.1 connections: each result
    is the status code (or ``"error: <exception>"`` when the connection failed or the
    answer took over 120 s) and the seconds from sending to having read the whole answer.

    A plain asyncio client with the requests encoded beforehand: on a 2-core machine the
    load generator shares the cores with the server, and aiohttp's per-request work (its
    client machinery, header handling, response parsing in Python objects) took several
    times the CPU of writing prepared bytes and reading the status line, headers and body.
    """
    parsed = urllib.parse.urlsplit(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    path = parsed.path or "/"
    wires = [_wire(parsed.netloc, path, r) for r in requests]
    results: list[tuple[Request, int | str, float]] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(requests)):
        queue.put_nowait(i)

    async def client() -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while not queue.empty():
            i = queue.get_nowait()
            start = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                assert reader is not None
                writer.write(wires[i])
                await writer.drain()
                status: int | str
                status, keep = await asyncio.wait_for(_read_response(reader), 120)
            except (OSError, EOFError, TimeoutError, ValueError, asyncio.LimitOverrunError) as err:
                status, keep = f"error: {type(err).__name__}", False
            results.append((requests[i], status, time.perf_counter() - start))
            if not keep and writer is not None:
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return results


LOAD: list[Request] = []  # the requests, inherited by forked client processes


def _client_process(url: str, indices: list[int], concurrency: int) -> list[tuple]:
    """One load-generating process: ``(index, status, seconds)`` for its share."""
    sent = asyncio.run(send_all(url, [LOAD[i] for i in indices], concurrency))
    position = {id(LOAD[i]): i for i in indices}
    return [(position[id(r)], status, t) for r, status, t in sent]


def send_load(
    pool: Any, url: str, indices: list[int], concurrency: int, clients: int
) -> list[tuple[Request, int | str, float]]:
    """``indices`` of the load sent by ``clients`` processes (``concurrency`` connections in
    all): on a small machine one Python client alone cannot keep a fast server busy."""
    if clients <= 1:
        return asyncio.run(send_all(url, [LOAD[i] for i in indices], concurrency))
    shares = [indices[c::clients] for c in range(clients)]
    per_client = max(1, concurrency // clients)
    futures = [pool.submit(_client_process, url, share, per_client) for share in shares]
    return [(LOAD[i], status, t) for f in futures for i, status, t in f.result()]

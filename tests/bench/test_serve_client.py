"""The load generator of ``longmm bench serve``: a plain asyncio HTTP/1.1 client, checked
against a real HTTP server (the standard library's) that answers with a Content-Length, in
chunks, or closes the connection after its answer."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from longmm.bench.serve_load import Request, send_all


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless an answer says otherwise
    seen: ClassVar[list[dict]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        mode = self.headers.get("X-Mode", "length")
        Handler.seen.append({"body": body, "key": self.headers.get("X-API-Key")})
        status = int(self.headers.get("X-Status", "200"))
        answer = json.dumps({"echo": len(body)}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if mode == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (answer[:5], answer[5:]):
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_header("Content-Length", str(len(answer)))
        if mode == "close":
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(answer)


@pytest.fixture()
def url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Handler.seen = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/predict"
    finally:
        server.shutdown()
        server.server_close()


def test_statuses_bodies_and_connection_modes(url: str) -> None:
    requests = []
    for i, (mode, status) in enumerate(
        [("length", 200), ("chunked", 200), ("close", 422), ("length", 413), ("chunked", 401)] * 4
    ):
        headers = {"Content-Type": "application/json", "X-Mode": mode, "X-Status": str(status)}
        if i % 2 == 0:
            headers["X-API-Key"] = "k"
        requests.append(Request(json.dumps({"i": i}).encode(), headers))
    results = asyncio.run(send_all(url, requests, concurrency=3))
    assert len(results) == len(requests)
    for r, status, seconds in results:
        assert status == int(r.headers["X-Status"])
        assert seconds > 0
    # every request arrived whole, with its own headers
    assert sorted(s["body"] for s in Handler.seen) == sorted(r.body for r in requests)
    assert sum(s["key"] == "k" for s in Handler.seen) == sum(
        "X-API-Key" in r.headers for r in requests
    )


def test_a_refused_connection_is_an_error_not_a_status() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    requests = [Request(b"{}", {"Content-Type": "application/json"}) for _ in range(3)]
    results = asyncio.run(send_all(f"http://127.0.0.1:{port}/predict", requests, 2))
    assert [status for _, status, _ in results] == ["error: ConnectionRefusedError"] * 3

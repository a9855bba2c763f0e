"""``longmm serve`` probed as an attacker would, on loopback: every case is answered 4xx, 503
or 504 with the documented error body (never another 5xx, never a hang); memory stays bounded
under concurrent large uploads; idle and half-sent connections are closed and do not stop
``/health`` or ``/predict``; a killed inference worker is replaced and the requests it held
get an error. Cases that need a server of their own (and so take more than ~20 s) are slow."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

KEY = "hostile-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, run: Path, *args: str, open_files: int | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.log = open(run.parent / f"hostile-{self.port}.log", "w+")  # noqa: SIM115

        def limit_files() -> None:
            if open_files is not None:
                hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
                resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, hard))

        command = [sys.executable, "-m", "longmm.cli", "serve", str(run), "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*command, "--api-key", KEY, *args],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=limit_files,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.output()}")
            try:
                if self.request("GET", "/health", timeout=5)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"server did not become ready:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict | None = None,
        timeout: float = 60,
    ) -> tuple[int, bytes, dict]:
        req = urllib.request.Request(self.url + path, data=body, method=method)
        for k, v in {"X-API-Key": KEY, **(headers or {})}.items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as err:
            return err.code, err.read(), dict(err.headers)

    def predict(self, text: str = "a fine film", timeout: float = 60) -> tuple[int, dict]:
        body = json.dumps({"text": text}).encode()
        status, raw, _ = self.request(
            "POST", "/predict", body, {"Content-Type": "application/json"}, timeout
        )
        return status, json.loads(raw)

    def upload(self, filename: str, data: bytes, question: str = "What is it?") -> tuple:
        boundary = "----hostileboundary"
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="question"\r\n\r\n'
            f"{question}\r\n--{boundary}\r\nContent-Disposition: form-data; "
            f'name="document"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        body += data + f"\r\n--{boundary}--\r\n".encode()
        ctype = f"multipart/form-data; boundary={boundary}"
        status, raw, headers = self.request("POST", "/read", body, {"Content-Type": ctype}, 300)
        return status, raw, headers

    def memory(self) -> int:
        """Resident bytes of the server and all its processes."""
        root = psutil.Process(self.proc.pid)
        total = 0
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += proc.memory_info().rss
        return total

    def workers(self) -> list[psutil.Process]:
        """The inference workers (spawned processes; the HTTP servers are forked)."""
        found = []
        for proc in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                if "spawn_main" in " ".join(proc.cmdline()):
                    found.append(proc)
            except psutil.NoSuchProcess:
                pass
        return found

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def assert_error_body(status: int, raw: bytes, allowed: tuple[int, ...] = ()) -> dict:
    """A documented error: 4xx (or one of ``allowed``) with ``{"error": {...}}``."""
    assert 400 <= status < 500 or status in allowed, (status, raw[:300])
    body = json.loads(raw)
    assert set(body) == {"error"}, body
    assert body["error"]["status"] == status and body["error"]["field"], body
    assert "detail" not in body
    return body["error"]


@pytest.fixture(scope="module")
def server(text_run: Path):
    srv = Server(
        text_run,
        "--timeout",
        "5",
        "--body-timeout",
        "2",
        "--head-timeout",
        "2",
        "--read-strategy",
        "bm25",
        "--read-timeout",
        "60",
    )
    yield srv
    srv.stop()


def pdf(objects: list[bytes]) -> bytes:
    """A PDF of ``objects`` (numbered from 1; object 1 the catalog) with a correct xref."""
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\n".encode()
    out += f"startxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def deep_page_tree(depth: int) -> bytes:
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    for level in range(depth):
        number = level + 2
        parent = f"/Parent {number - 1} 0 R " if level else ""
        objects.append(f"<< /Type /Pages {parent}/Kids [{number + 1} 0 R] /Count 1 >>".encode())
    objects.append(f"<< /Type /Page /Parent {depth + 1} 0 R /MediaBox [0 0 9 9] >>".encode())
    return pdf(objects)


def flate_bomb(megabytes: int) -> bytes:
    packer = zlib.compressobj(9)
    block = b"(A) Tj " * (1024 * 1024 // 7)
    stream = b"".join(packer.compress(block) for _ in range(megabytes)) + packer.flush()
    return pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 9 9] /Contents 4 0 R >>",
            f"<< /Length {len(stream)} /Filter /FlateDecode >>\nstream\n".encode()
            + stream
            + b"\nendstream",
        ]
    )


# ---- bodies a parser chokes on --------------------------------------------------------------


def test_json_nested_100k_deep_is_a_400(server: Server) -> None:
    body = b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    status, raw, _ = server.request("POST", "/predict", body, {"Content-Type": "application/json"})
    assert status == 400
    assert assert_error_body(status, raw)["field"] == "request body"


def test_unknown_paths_and_methods_get_the_error_body(server: Server) -> None:
    for method, path, code in [
        ("GET", "/nope", 404),
        ("GET", "/info", 404),  # LitServe's own routes are not served
        ("GET", "/predict", 405),
        ("DELETE", "/models", 405),
        ("POST", "/health", 405),
    ]:
        status, raw, _ = server.request(method, path)
        assert status == code, (method, path, status)
        assert_error_body(status, raw)


def test_html_100k_nested_tags(server: Server) -> None:
    html = b"<html><body>" + b"<div>" * 100_000 + b"deep" + b"</div>" * 100_000 + b"</body></html>"
    status, raw, _ = server.upload("deep.html", html)
    assert status == 422, raw[:300]
    assert "nested" in assert_error_body(status, raw)["message"]


def test_pdf_page_tree_3000_levels(server: Server) -> None:
    status, raw, _ = server.upload("deep.pdf", deep_page_tree(3000))
    assert_error_body(status, raw)


def test_pdf_flate_bomb(server: Server) -> None:
    bomb = flate_bomb(300)  # 300 MB of content stream in a few hundred KB
    assert len(bomb) < 2_000_000
    start = time.monotonic()
    status, raw, _ = server.upload("bomb.pdf", bomb)
    assert status < 500, raw[:300]
    if status >= 400:
        assert_error_body(status, raw)
    assert time.monotonic() - start < 60


def test_broken_pdf_and_missing_dependency_are_named() -> None:
    from longmm.deploy.runfolder import InputError
    from longmm.deploy.serve.read import _load

    class DependencyError(Exception):
        pass

    def aes(path: str) -> None:
        raise DependencyError("cryptography>=3.1 is required for AES algorithm")

    with pytest.raises(InputError) as err:
        _load(aes, "x.pdf")
    assert err.value.status == 422 and "cryptography" in err.value.message


# ---- slow and half-sent requests ------------------------------------------------------------


def test_half_sent_body_gets_a_408(server: Server) -> None:
    head = (
        f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {KEY}\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as conn:
        conn.sendall(head + b'{"text": "')
        start = time.monotonic()
        reply = b""
        while not reply.endswith(b"}}") and (chunk := conn.recv(65536)):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert time.monotonic() - start < 15
    assert b'"error"' in reply


def test_half_sent_head_and_idle_connections_are_closed(server: Server) -> None:
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    half = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    half.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
    start = time.monotonic()
    for conn in (idle, half):
        with conn:
            assert conn.recv(1024) == b""  # closed by the server
    assert time.monotonic() - start < 15


def test_reads_past_the_slots_get_503_with_retry_after(server: Server) -> None:
    words = " ".join(f"word{i % 5000} filler text here." for i in range(150_000))
    results = []

    def read() -> None:
        results.append(server.upload("big.txt", words.encode()))

    first = threading.Thread(target=read)
    first.start()
    time.sleep(0.5)
    status, raw, headers = server.upload("small.txt", b"A small document about ships.")
    first.join(timeout=120)
    if status == 503:
        assert_error_body(status, raw, (503,))
        assert int({k.lower(): v for k, v in headers.items()}["retry-after"]) > 0
    else:  # the big one was already done: the machine was fast
        assert status == 200, raw[:300]
    assert results and results[0][0] in (200, 413, 504), results[0][1][:300]


# ---- many connections, memory, a dead worker (each a server of its own) ----------------------


@pytest.mark.slow
def test_1100_idle_connections_under_1024_open_files(text_run: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    srv = Server(text_run, "--head-timeout", "5", open_files=1024)
    conns = []
    try:
        for _ in range(1100):
            conns.append(socket.create_connection(("127.0.0.1", srv.port), timeout=10))
        assert srv.request("GET", "/health", timeout=20)[0] == 200
        assert srv.predict(timeout=20)[0] == 200
        time.sleep(7)  # past the head timeout: the idle crowd is closed
        conns[0].settimeout(5)
        assert conns[0].recv(10) == b""
        assert srv.predict()[0] == 200
    finally:
        for conn in conns:
            conn.close()
        srv.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.slow
def test_20_concurrent_19mb_reads_stay_under_1_5_gb(text_run: Path) -> None:
    srv = Server(text_run, "--read-strategy", "bm25", "--read-timeout", "120")
    try:
        idle = srv.memory()
        peak = idle
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, srv.memory())
                time.sleep(0.1)

        sampler = threading.Thread(target=sample)
        sampler.start()
        doc = (b"The quick brown fox jumps over the lazy dog near the river bank. " * 300_000)[
            : 19 * 1024 * 1024
        ]
        with ThreadPoolExecutor(20) as pool:
            results = list(pool.map(lambda i: srv.upload(f"d{i}.txt", doc), range(20)))
        done.set()
        sampler.join()
        for status, raw, _ in results:
            assert status in (200, 413, 503, 504), raw[:300]
            if status != 200:
                assert_error_body(status, raw, (503, 504))
        assert peak - idle < 1.5 * 2**30, (idle, peak)
        assert srv.request("GET", "/health")[0] == 200
    finally:
        srv.stop()


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_its_requests_get_an_error(text_run: Path) -> None:
    srv = Server(text_run, "--timeout", "5", "--max-batch", "8", "--batch-timeout-ms", "50")
    try:
        (worker,) = srv.workers()
        with ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(srv.predict, f"film {i}", 30) for i in range(32)]
            time.sleep(0.05)
            worker.send_signal(signal.SIGKILL)
            outcomes = [f.result(timeout=40) for f in futures]  # none hangs
        for status, body in outcomes:
            assert status in (200, 503, 504), body
            if status != 200:
                assert body["error"]["status"] == status
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if srv.request("GET", "/health", timeout=10)[0] == 200:
                break
            time.sleep(1)
        else:
            pytest.fail(f"no worker came back:\n{srv.output()}")
        assert srv.predict()[0] == 200
        assert [w.pid for w in srv.workers()] != [worker.pid]
    finally:
        srv.stop()

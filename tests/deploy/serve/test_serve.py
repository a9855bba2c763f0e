"""`longmm serve` for real: tiny trained runs, a server subprocess on a free loopback port,
every endpoint with good and bad input, the API key, metrics, the web page in headless
Chromium, and a drain on SIGTERM with a request in flight."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

ROOT = Path(__file__).resolve().parents[3]
KEY = "test-key-123"
CHROMIUM = "/usr/bin/chromium"
FAST = [
    "--trainer.max_epochs",
    "1",
    "--trainer.limit_train_batches",
    "3",
    "--trainer.limit_val_batches",
    "1",
    "--trainer.limit_test_batches",
    "1",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
]

AV_RECIPE = """\
seed_everything: 0
model:
  class_path: longmm.tasks.Classify
  init_args:
    encoders:
      image:
        class_path: longmm.encoders.ArticleCNN
        init_args: {in_channels: 1, image_size: 8, dim: 16}
      audio:
        class_path: longmm.encoders.AudioCNN
        init_args: {n_mels: 16, dim: 16, channels: [8, 16]}
    fusion:
      class_path: longmm.fusion.WeightedFusion
      init_args: {out_dim: 16}
    attribution_samples: 0
data:
  class_path: longmm.data.AVDigits
  init_args:
    format: manifest
    root: MANIFEST
    image_size: 8
    channels: 1
    n_mels: 16
    batch_size: 8
"""


def png_bytes(size: tuple[int, int] = (8, 8), seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, size=size[::-1], dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def wav_bytes(seconds: float = 0.5, rate: int = 8000, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    sf.write(
        buf, (0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32), rate, format="WAV"
    )
    return buf.getvalue()


def write_av_manifest(folder: Path) -> Path:
    """Ten classes, image + audio pairs in train/val/test."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for split, n in (("train", 20), ("val", 10), ("test", 10)):
        for i in range(n):
            label = i % 10
            image, audio = f"{split}{i}.png", f"{split}{i}.wav"
            (folder / image).write_bytes(png_bytes(seed=hash((split, i)) % 1000))
            (folder / audio).write_bytes(wav_bytes(0.3, seed=i))
            lines.append({"image": image, "audio": audio, "label": str(label), "split": split})
    manifest = folder / "pairs.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return manifest


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from longmm.cli import run_lightning

    base = tmp_path_factory.mktemp("runs")
    text = base / "sentiment"
    run_lightning(
        ["fit", "--config", str(ROOT / "recipes" / "rnn_sentiment.yaml"), "--out", str(text), *FAST]
    )
    manifest = write_av_manifest(base / "avdata")
    recipe = base / "av.yaml"
    recipe.write_text(AV_RECIPE.replace("MANIFEST", str(manifest)))
    av = base / "av"
    run_lightning(["fit", "--config", str(recipe), "--out", str(av), *FAST])
    return {"text": text, "av": av}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, runs: list[Path], *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.log = open(runs[0].parent / f"serve-{self.port}.log", "w+")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "longmm.cli",
                "serve",
                *map(str, runs),
                *args,
                "--port",
                str(self.port),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.output()}")
            try:
                if self.get("/health")[0] == 200:
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
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> tuple[int, bytes, dict]:
        req = urllib.request.Request(self.url + path, data=body, method=method)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as err:
            return err.code, err.read(), dict(err.headers)

    def get(self, path: str, key: str | None = None) -> tuple[int, bytes, dict]:
        return self.request("GET", path, headers={"X-API-Key": key} if key else None)

    def post_json(self, path: str, payload: object, key: str | None = KEY) -> tuple[int, dict]:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["X-API-Key"] = key
        status, body, _ = self.request("POST", path, json.dumps(payload).encode(), headers)
        return status, json.loads(body)

    def post_form(
        self, path: str, fields: dict[str, str], files: dict[str, tuple[str, bytes]]
    ) -> tuple[int, dict]:
        boundary = "----longmmtestboundary"
        parts = []
        for k, v in fields.items():
            head = f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n'
            parts.append(f"{head}{v}\r\n".encode())
        for k, (name, data) in files.items():
            head = (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; '
                f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
            )
            parts.append(head.encode() + data + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", "X-API-Key": KEY}
        status, raw, _ = self.request("POST", path, body, headers)
        return status, json.loads(raw)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def server(runs: dict[str, Path]):
    srv = Server(
        [runs["text"], runs["av"]],
        "--api-key",
        KEY,
        "--max-image-pixels",
        "10000",
        "--max-audio-seconds",
        "2",
        "--max-text-tokens",
        "60",
        "--max-request-mb",
        "0.5",
        "--read-strategy",
        "bm25",
    )
    yield srv
    srv.stop()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ---- health, models, docs ---------------------------------------------------------------------


def test_health_is_open_and_lists_models(server: Server) -> None:
    status, body, _ = server.get("/health")
    assert status == 200
    assert json.loads(body) == {"status": "ok", "models": ["av", "sentiment"]}


def test_models_describe_each_run(server: Server) -> None:
    status, body, _ = server.get("/models", KEY)
    assert status == 200
    info = {m["name"]: m for m in json.loads(body)["models"]}
    assert info["sentiment"]["modalities"] == ["text"]
    assert info["sentiment"]["classes"] == ["negative", "positive"]
    assert info["av"]["modalities"] == ["image", "audio"]
    assert info["av"]["fusion"] == "WeightedFusion"


def test_openapi_documents_predict_json_and_multipart(server: Server) -> None:
    status, body, _ = server.get("/openapi.json")
    assert status == 200
    spec = json.loads(body)
    content = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(content)
    assert server.get("/docs")[0] == 200


# ---- predict --------------------------------------------------------------------------------


def test_predict_text_json(server: Server) -> None:
    status, out = server.post_json("/predict", {"model": "sentiment", "text": "a great film"})
    assert status == 200, out
    assert out["label"] in ("negative", "positive")
    assert sum(t["prob"] for t in out["top"]) == pytest.approx(1.0, abs=1e-4)
    assert out["top"][0]["label"] == out["label"]
    assert out["modalities"] == ["text"]
    assert "weights" not in out  # a single-encoder model has no fusion weights


def test_predict_fusion_json_and_multipart(server: Server) -> None:
    image, audio = png_bytes(seed=3), wav_bytes(0.4, seed=3)
    status, both = server.post_json(
        "/predict", {"model": "av", "image": b64(image), "audio": b64(audio)}
    )
    assert status == 200, both
    assert set(both["weights"]) == {"image", "audio"}
    assert sum(both["weights"].values()) == pytest.approx(1.0, abs=1e-4)
    assert all(0 < w < 1 for w in both["weights"].values())
    # The same inputs as a multipart upload give the same answer.
    status, form = server.post_form(
        "/predict", {"model": "av"}, {"image": ("x.png", image), "audio": ("x.wav", audio)}
    )
    assert status == 200, form
    assert form["top"] == both["top"] and form["weights"] == both["weights"]
    # One modality: all the weight on it.
    status, only = server.post_json("/predict", {"model": "av", "image": b64(image)})
    assert status == 200, only
    assert only["weights"] == {"image": 1.0, "audio": 0.0}


def test_served_answers_equal_longmm_predict(
    server: Server, runs: dict[str, Path], tmp_path: Path
) -> None:
    """The server prepares an upload as training prepared the data: the same test pairs give
    the same class and probability as ``longmm predict`` on the run's own test split."""
    from longmm.cli import run_lightning

    av = runs["av"]
    ckpt = str(av / "checkpoints" / "best.ckpt")
    out = tmp_path / "pred"
    run_lightning(
        ["predict", "--config", str(av / "config.yaml"), "--ckpt_path", ckpt, "--out", str(out)]
    )
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    for row in rows[:4]:
        manifest, line = row["where"].rsplit(":", 1)
        pair = json.loads(Path(manifest).read_text().splitlines()[int(line) - 1])
        folder = Path(manifest).parent
        status, served = server.post_form(
            "/predict",
            {"model": "av"},
            {
                "image": ("i.png", (folder / pair["image"]).read_bytes()),
                "audio": ("a.wav", (folder / pair["audio"]).read_bytes()),
            },
        )
        assert status == 200, served
        assert served["label"] == row["pred"]
        assert served["confidence"] == pytest.approx(row["prob"], abs=1e-5)


def test_predict_concurrent_requests_are_batched(server: Server) -> None:
    from concurrent.futures import ThreadPoolExecutor

    texts = [f"the film was {'not ' * (i % 3)}good {i}" for i in range(24)]
    with ThreadPoolExecutor(12) as pool:
        outs = list(
            pool.map(
                lambda t: server.post_json("/predict", {"model": "sentiment", "text": t}), texts
            )
        )
    assert all(status == 200 for status, _ in outs)
    # Each answer is the one the text gets alone, whatever batch it rode in.
    alone = server.post_json("/predict", {"model": "sentiment", "text": texts[5]})[1]
    batched = outs[5][1]["top"]
    assert [t["label"] for t in batched] == [t["label"] for t in alone["top"]]
    assert [t["prob"] for t in batched] == pytest.approx(
        [t["prob"] for t in alone["top"]], abs=1e-4
    )
    assert max(out["batch_size"] for _, out in outs) > 1


@pytest.mark.parametrize(
    ("payload", "status", "field", "says"),
    [
        ({"model": "sentiment"}, 422, "inputs", "give at least one of text"),
        ({"model": "sentiment", "text": "   "}, 422, "text", "is empty"),
        ({"model": "sentiment", "text": 42}, 422, "text", "must be a string, got int"),
        ({"model": "sentiment", "text": "good " * 200}, 413, "text", "over the limit"),
        (
            {"model": "sentiment", "image": b64(png_bytes())},
            422,
            "image",
            "this model reads text input, not image",
        ),
        ({"model": "av", "text": "hi"}, 422, "text", "reads image and audio input, not text"),
        ({"model": "nope", "text": "hi"}, 422, "model", "unknown model 'nope'"),
        ({"text": "hi"}, 422, "model", "choose one of"),  # two models loaded: which one?
        ({"model": "sentiment", "txt": "hi"}, 422, "txt", "unknown field"),
        ({"model": "av", "image": "not base64!"}, 422, "image", "not valid base64"),
        (
            {"model": "av", "image": b64(b"GIF89a broken")},
            422,
            "image",
            "not a readable image (PIL cannot identify its format)",
        ),
        ({"model": "av", "image": b64(png_bytes((200, 200)))}, 413, "image", "over the limit"),
        (
            {"model": "av", "audio": b64(b"RIFF....WAVEfmt ")},
            422,
            "audio",
            "not a readable audio file (Error in WAV file",
        ),
        ({"model": "av", "audio": b64(wav_bytes(3.0))}, 413, "audio", "over the limit"),
        ([1, 2], 422, "request body", "must be a JSON object, got list"),
    ],
)
def test_predict_bad_input_names_the_field(
    server: Server, payload: object, status: int, field: str, says: str
) -> None:
    got, out = server.post_json("/predict", payload)
    assert got == status, out
    assert out["error"]["field"] == field
    assert out["error"]["status"] == status
    assert says in out["error"]["message"], out
    assert "object at 0x" not in out["error"]["message"], out


def test_predict_bad_bodies(server: Server) -> None:
    headers = {"Content-Type": "application/json", "X-API-Key": KEY}
    status, body, _ = server.request("POST", "/predict", b'{"text": "unclosed', headers)
    assert status == 400 and json.loads(body)["error"]["field"] == "request body"
    status, body, _ = server.request("POST", "/predict", b"", headers)
    assert status == 400
    status, body, _ = server.request(
        "POST", "/predict", b"hello", {"Content-Type": "text/plain", "X-API-Key": KEY}
    )
    assert status == 415 and json.loads(body)["error"]["field"] == "Content-Type"
    big = json.dumps({"model": "sentiment", "text": "a" * 600_000}).encode()
    status, body, _ = server.request("POST", "/predict", big, headers)
    assert status == 413 and json.loads(body)["error"]["field"] == "request body"
    status, body, _ = server.request(
        "POST",
        "/predict",
        b"--x\r\nbroken",
        {"Content-Type": "multipart/form-data; boundary=x", "X-API-Key": KEY},
    )
    assert 400 <= status < 500


# ---- auth -----------------------------------------------------------------------------------


def test_api_key_required(server: Server) -> None:
    payload = {"model": "sentiment", "text": "fine"}
    status, out = server.post_json("/predict", payload, key=None)
    assert status == 401 and out["error"]["field"] == "X-API-Key"
    assert server.post_json("/predict", payload, key="wrong")[0] == 401
    assert server.get("/models")[0] == 401
    assert server.get("/metrics")[0] == 401
    bearer = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    status, _, _ = server.request("POST", "/predict", json.dumps(payload).encode(), bearer)
    assert status == 200


# ---- read -----------------------------------------------------------------------------------


def test_read_endpoint(server: Server) -> None:
    from longmm.deploy.serve.read import reader_available

    doc = (
        "The lighthouse keeper logged the storm on Tuesday. "
        "The cargo ship Meridian reached the harbour at dawn on Friday. "
        "Gulls nested on the north cliff all spring."
    )
    status, out = server.post_json(
        "/read", {"text": doc, "question": "When did the Meridian reach the harbour?"}
    )
    if not reader_available():
        assert status == 501 and out["error"]["field"] == "endpoint"
        return
    assert status == 200, out
    best = out["evidence"][0]
    assert doc[best["start"] : best["end"]] == best["text"]
    assert "Meridian" in best["text"]
    assert "document_text" not in out  # only when asked for
    status, out = server.post_json(
        "/read", {"text": doc, "question": "Who logged the storm?", "include_text": True}
    )
    assert status == 200 and out["document_text"] == doc
    status, out = server.post_json("/read", {"text": doc, "question": "Who?", "include_text": "x"})
    assert status == 422 and out["error"]["field"] == "include_text"
    status, out = server.post_json("/read", {"text": doc})
    assert status == 422 and out["error"]["field"] == "question"


# ---- metrics --------------------------------------------------------------------------------


def test_metrics_count_requests_errors_and_batches(server: Server) -> None:
    server.post_json("/predict", {"model": "nope", "text": "x"})
    server.post_json("/predict", {"model": "sentiment", "text": "x"})
    status, body, headers = server.get("/metrics", KEY)
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    text = body.decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert samples['longmm_requests_total{code="422",endpoint="/predict"}'] >= 1
    assert samples['longmm_errors_total{code="422",endpoint="/predict"}'] >= 1
    assert samples['longmm_requests_total{code="200",endpoint="/predict"}'] >= 1
    assert samples['longmm_batch_size_count{model="sentiment"}'] >= 1
    assert 'longmm_request_latency_seconds_bucket{endpoint="/predict",le="0.1"}' in samples


# ---- the web page ---------------------------------------------------------------------------


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed")
def test_web_page_in_chromium(server: Server, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    image, audio = tmp_path / "digit.png", tmp_path / "digit.wav"
    image.write_bytes(png_bytes(seed=7))
    audio.write_bytes(wav_bytes(0.4, seed=7))
    garbage = tmp_path / "broken.png"
    garbage.write_bytes(b"not an image at all")
    args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            page.wait_for_selector("#status:has-text('not connected')")
            page.fill("#api-key", KEY)
            page.click("#connect")
            page.wait_for_selector("#status:has-text('2 model(s) loaded')")
            # Fusion model: image + audio -> a label and both modality weights.
            page.select_option("#model", "av")
            assert page.is_visible("#image") and page.is_visible("#audio")
            assert not page.is_visible("#text")
            page.set_input_files("#image", str(image))
            page.set_input_files("#audio", str(audio))
            page.click("#predict-btn")
            page.wait_for_selector("#result:not(.hidden)")
            label = page.inner_text("#label")
            assert label in [str(d) for d in range(10)]
            weights = {
                row.get_attribute("data-name"): float(row.query_selector(".value").inner_text())
                for row in page.query_selector_all("#weights .bar")
            }
            assert set(weights) == {"image", "audio"}
            assert sum(weights.values()) == pytest.approx(1.0, abs=2e-3)
            # Text model: pasted text -> a sentiment label, no weights block.
            page.select_option("#model", "sentiment")
            page.fill("#text", "an utterly wonderful film")
            page.click("#predict-btn")
            page.wait_for_function(
                "['negative','positive'].includes(document.querySelector('#label').textContent)"
            )
            assert page.is_hidden("#weights-block")
            # A broken upload: the error names the field.
            page.select_option("#model", "av")
            page.set_input_files("#image", str(garbage))
            page.set_input_files("#audio", [])
            page.click("#predict-btn")
            page.wait_for_selector("#predict-error:has-text('image')")
            assert "422" in page.inner_text("#predict-error")
            # A long document and a question: the answer, its evidence highlighted.
            from longmm.deploy.serve.read import reader_available

            if not reader_available():
                assert page.is_visible("#read-unavailable") and page.is_disabled("#read-btn")
                return
            doc = " ".join(
                f"Paragraph {i} talks about the weather in town number {i}." for i in range(60)
            )
            doc += " The secret launch code is 4417, kept in the blue safe."
            page.fill("#doc-text", doc)
            page.fill("#question", "What is the secret launch code?")
            page.click("#read-btn")
            page.wait_for_selector("#answer-block:not(.hidden)")
            assert "4417" in page.inner_text("#answer")
            if page.inner_text("#answer").strip() == "4417":  # a span: shown in its sentence
                assert "launch code is 4417" in page.inner_text("#answer-context")
            marks = page.query_selector_all("#document-view mark")
            assert marks and any("4417" in m.inner_text() for m in marks)
        finally:
            browser.close()


# ---- shutdown (last: it stops the module's server) ------------------------------------------


def test_sigterm_finishes_the_request_in_flight(server: Server) -> None:
    body = json.dumps({"model": "sentiment", "text": "a request sent in two halves"}).encode()
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {KEY}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as conn:
        conn.sendall(head + body[:10])  # the request is now in flight
        time.sleep(0.5)
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        conn.sendall(body[10:])
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    assert server.proc.wait(timeout=60) == 0, server.output()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()


def test_serve_refuses_missing_runs_and_a_busy_port(tmp_path: Path) -> None:
    from longmm.deploy.serve import main
    from longmm.errors import LongmmError

    with pytest.raises(LongmmError, match="run folder not found"):
        main([str(tmp_path / "nothing"), "--port", str(free_port())])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LongmmError, match="checkpoint not found"):
        main([str(empty), "--port", str(free_port())])
    shutil.rmtree(empty)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(LongmmError, match=f"cannot listen on 127.0.0.1:{port}"):
            main([str(tmp_path), "--port", str(port)])


def test_serve_help_describes_every_option_and_its_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from longmm.deploy.serve import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    text = " ".join(out.split())  # argparse wraps lines
    for option, default in [
        ("--host", "127.0.0.1"),
        ("--port", "8000"),
        ("--max-request-mb", "20.0"),
        ("--max-image-pixels", "16777216"),
        ("--max-audio-seconds", "60.0"),
        ("--max-text-tokens", "16384"),
        ("--max-document-tokens", "2000000"),
        ("--timeout", "30.0"),
        ("--log-level", "warning"),
    ]:
        assert option in text
        assert f"(default: {default})" in text, option
    # Every option (-h aside) has its help and its default: one "(default: ...)" each.
    options = set(re.findall(r"^  (--[a-z-]+)", out.split("options:", 1)[1], re.MULTILINE))
    assert len(options) >= 16, options
    assert text.count("(default: ") == len(options), text

"""The requests of ``longmm bench serve``: good ones for a model's modalities (texts from the
embedded review set, digit images, synthetic clips) and malformed ones of varied kinds, all
encoded before the load starts."""

from __future__ import annotations

import base64
import io
import json
import random
from typing import Any

import numpy as np

from longmm.bench.serve_load import Request

KEY = "bench-key"
MALFORMED_KINDS = (
    "invalid_json",
    "unknown_field",
    "no_inputs",
    "text_not_string",
    "unknown_model",
    "too_many_tokens",
    "wrong_modality",
    "bad_base64",
    "wrong_content_type",
    "no_api_key",
    "oversized_body",
)
MAX_REQUEST_MB = 1.0
MAX_TEXT_TOKENS = 256


def _texts(n: int, seed: int, sentences: int = 1) -> list[str]:
    """Texts of ``sentences // 2`` to ``sentences`` sentences of the embedded review set (one
    sentence each when ``sentences`` is 1): short posts, or review-length documents."""
    from longmm.data.builtin import BUILTINS

    pool = [s.inputs["text"] for s in BUILTINS["sentiment"].read().splits["all"]]
    rng = random.Random(seed)
    lo = max(1, sentences // 2)
    return [" ".join(rng.choices(pool, k=rng.randint(lo, sentences))) for _ in range(n)]


def _images(n: int, seed: int) -> list[bytes]:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits().images  # (1797, 8, 8) in 0..16
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        pixels = (digits[rng.randrange(len(digits))] * 255 / 16).astype(np.uint8)
        Image.fromarray(pixels).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def _clips(n: int, seed: int, rate: int = 8000) -> list[bytes]:
    import soundfile as sf

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        t = np.arange(int(rate * rng.uniform(0.3, 0.8))) / rate
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(150, 400) * t) * np.exp(-3 * t)
        buf = io.BytesIO()
        sf.write(buf, wave.astype(np.float32), rate, format="WAV")
        out.append(buf.getvalue())
    return out


def build_requests(
    model: str, modalities: list[str], n: int, malformed: float, seed: int, sentences: int = 1
) -> list[Request]:
    """``n`` requests in a fixed shuffled order: good ones for the model's modalities, and
    about ``malformed * n`` broken ones cycling through ``MALFORMED_KINDS``."""
    rng = random.Random(seed)
    n_bad = round(n * malformed)
    texts = _texts(n, seed, sentences) if "text" in modalities else []
    images = _images(n, seed) if "image" in modalities else []
    clips = _clips(min(n, 200), seed) if "audio" in modalities else []
    json_headers = {"Content-Type": "application/json", "X-API-Key": KEY}

    def good(i: int) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": model}
        if texts:
            payload["text"] = texts[i]
        if images:
            payload["image"] = base64.b64encode(images[i]).decode()
        if clips:
            payload["audio"] = base64.b64encode(clips[i % len(clips)]).decode()
        return payload

    requests = [Request(json.dumps(good(i)).encode(), json_headers) for i in range(n - n_bad)]
    for j in range(n_bad):
        kind = MALFORMED_KINDS[j % len(MALFORMED_KINDS)]
        base = good(j)
        headers = dict(json_headers)
        if kind == "invalid_json":
            body = json.dumps(base).encode()[:-3]
        elif kind == "unknown_field":
            body = json.dumps({**base, "colour": "blue"}).encode()
        elif kind == "no_inputs":
            body = json.dumps({"model": model}).encode()
        elif kind == "text_not_string":
            body = json.dumps({"model": model, "text": [1, 2, 3]}).encode()
        elif kind == "unknown_model":
            body = json.dumps({**base, "model": "no-such-model"}).encode()
        elif kind == "too_many_tokens":
            body = json.dumps({"model": model, "text": "word " * (4 * MAX_TEXT_TOKENS)}).encode()
        elif kind == "wrong_modality":
            other = "image" if "image" not in modalities else "text"
            value = base64.b64encode(b"\x89PNG not really").decode() if other == "image" else "hi"
            body = json.dumps({"model": model, other: value}).encode()
        elif kind == "bad_base64":
            body = json.dumps({"model": model, "image": "@@not base64@@"}).encode()
        elif kind == "wrong_content_type":
            body = b"text=hello"
            headers["Content-Type"] = "text/plain"
        elif kind == "no_api_key":
            body = json.dumps(base).encode()
            headers.pop("X-API-Key")
        else:  # oversized_body
            body = b'{"model": "x", "text": "' + b"a" * int(MAX_REQUEST_MB * 1.2e6) + b'"}'
        requests.append(Request(body, headers, kind))
    rng.shuffle(requests)
    return requests

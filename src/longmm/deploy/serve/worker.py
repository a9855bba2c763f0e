"""The inference workers: one :class:`ClassifierAPI` (a LitServe ``LitAPI``) per worker
process, batched by LitServe's own dynamic batching (``max_batch_size``, ``batch_timeout``).

The HTTP server checks and prepares every input before it reaches a batch (a batch fails as a
whole in LitServe, so one bad input must never get that far) and sends the prepared arrays
in a small JSON wire format of our own (:func:`encode_job`): each array as its dtype, shape
and base64 bytes, which the worker turns back into the same arrays without parsing numbers.
A ``{"ping": true}`` job is answered without touching a model: it is how ``GET /health``
learns that a worker really answers.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import litserve as ls
import numpy as np

from longmm.deploy.runfolder import load_served_run
from longmm.deploy.serve.metrics import server_metrics

PING = {"ping": True}


def encode_job(model: str, items: dict[str, np.ndarray]) -> bytes:
    """The wire form of one prepared request: ``{"model", "items": {modality: [dtype, shape,
    base64]}}``."""
    wire = {
        modality: [array.dtype.str, list(array.shape), base64.b64encode(array.tobytes()).decode()]
        for modality, array in items.items()
    }
    return json.dumps({"model": model, "items": wire}).encode()


def decode_items(wire: dict[str, list]) -> dict[str, np.ndarray]:
    return {
        modality: np.frombuffer(base64.b64decode(data), dtype=np.dtype(dtype)).reshape(shape)
        for modality, (dtype, shape, data) in wire.items()
    }


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

    def decode_request(self, request):  # unannotated: LitServe reads the body as JSON
        if request.get("ping"):
            return PING
        return {"model": request["model"], "items": decode_items(request["items"])}

    def predict(self, x: Any) -> Any:
        requests = x if isinstance(x, list) else [x]
        outputs: list[dict] = [{"pong": True}] * len(requests)
        by_model: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            if request is not PING and "model" in request:
                by_model.setdefault(request["model"], []).append(i)
        for name, indices in by_model.items():
            metrics = server_metrics()
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

    def encode_response(self, output):  # unannotated: FastAPI encodes the dict
        return output

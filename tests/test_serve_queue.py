"""``longmm.deploy.serve.RequestQueue``: the pipe from the HTTP servers to the inference
workers, with the calls LitServe's worker loops make, across a real spawned process."""

from __future__ import annotations

import multiprocessing as mp
import queue
import time

import numpy as np
import pytest

from longmm.deploy.serve import RequestQueue


def test_empty_queue_times_out_and_get_nowait_raises() -> None:
    requests = RequestQueue()
    with pytest.raises(queue.Empty):
        requests.get_nowait()
    start = time.monotonic()
    with pytest.raises(queue.Empty):
        requests.get(timeout=0.05)
    assert 0.04 <= time.monotonic() - start < 2.0


def test_items_cross_from_spawned_processes() -> None:
    """Each item is put by its own spawned process (as a forked HTTP server would) and read
    here with ``get(timeout=...)`` (as the inference worker does); one is bigger than any pipe
    buffer, so its writer waits for the reader."""
    requests = RequestQueue()
    context = mp.get_context("spawn")
    big = np.arange(400_000, dtype=np.int64)  # 3.2 MB
    items = [(0, "a", 1.0, {"x": np.arange(5)}), (1, "b", 2.0, {"x": big}), (0, "c", 3.0, None)]
    got = []
    for item in items:
        writer = context.Process(target=requests.put, args=(item,))
        writer.start()
        try:
            got.append(requests.get(timeout=120))
        finally:
            writer.join(timeout=30)
        assert writer.exitcode == 0
    assert [g[1] for g in got] == ["a", "b", "c"]
    np.testing.assert_array_equal(got[1][3]["x"], big)
    assert got[2][3] is None
    with pytest.raises(queue.Empty):
        requests.get_nowait()

"""``longmm bench needle`` on tiny lengths: JSON rows, summary, heatmap and curve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from longmm.bench.needle import STRATEGIES, PeakRSS, register_strategy, run_needles
from longmm.cli.bench import main
from longmm.errors import DataError


def test_bench_writes_rows_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "needle.json"
    main(
        [
            "needle",
            "--task", "passkey",
            "--lengths", "512,1024",
            "--samples", "2",
            "--depths", "2",
            "--strategy", "bm25",
            "--json", str(out),
        ]
    )  # fmt: skip
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert {(r["length"], r["depth"]) for r in rows} == {
        (512, 0.0),
        (512, 1.0),
        (1024, 0.0),
        (1024, 1.0),
    }
    for r in rows:
        assert set(r) >= {"task", "strategy", "length", "depth", "accuracy", "seconds", "peak_mib"}
        assert r["task"] == "passkey" and r["strategy"] == "bm25"
        assert 0 <= r["accuracy"] <= 1 and r["seconds"] > 0 and r["peak_mib"] > 10
    assert [s["length"] for s in result["summary"]] == [512, 1024]
    assert "--lengths 512,1024" in result["command"]
    assert out.with_suffix(".png").stat().st_size > 1000
    assert (tmp_path / "needle_length.png").stat().st_size > 1000


def test_registry_takes_new_strategies() -> None:
    def build():
        return lambda sample: sample.text[sample.needle_spans[0][0] : sample.needle_spans[0][1]]

    register_strategy("oracle-test", build, "reads the needle span (a test of the registry)")
    try:
        result = run_needles(["niah_single"], ["oracle-test"], [512], 2, 2, log=lambda m: None)
        assert [r["accuracy"] for r in result["summary"]] == [1.0]
    finally:
        STRATEGIES.pop("oracle-test")
    with pytest.raises(DataError, match="unknown"):
        run_needles(["passkey"], ["nope"], [512], 1)


def test_peak_rss_sees_an_allocation() -> None:
    with PeakRSS() as mem:
        block = bytearray(64 * 2**20)
        block[::4096] = b"x" * len(block[::4096])
        import time

        time.sleep(0.05)
    assert mem.mib > 64

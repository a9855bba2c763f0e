"""``longmm bench efficiency``: one real measurement in a child process, and the checks."""

from __future__ import annotations

import json

import pytest

from longmm.bench import efficiency as E
from longmm.errors import LongmmError


@pytest.mark.slow
def test_child_measurement_reports_speed_and_memory():
    row = E.measure_in_child("longmm", 1024, "fp32", threads=1, repeats=1, timeout=300)
    assert "error" not in row, row
    assert row["impl"] == "longmm" and row["tokens"] == 1024 and row["precision"] == "fp32"
    assert row["tokens_per_s"] > 0 and row["seconds"] > 0
    assert row["peak_mib"] > 100  # python + torch + model: a real resident set, not a delta
    assert 0 <= row["forward_mib"] < row["peak_mib"]


def test_unknown_implementation_and_precision_are_named():
    with pytest.raises(LongmmError, match="unknown implementation 'bert'"):
        E.measure("bert", 1024)
    with pytest.raises(LongmmError, match="unknown precision 'fp8'"):
        E.measure("longmm", 1024, "fp8")


def _row(impl: str, precision: str, tokens: int, seconds: float, peak: float) -> dict:
    return {
        "impl": impl,
        "precision": precision,
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "peak_mib": peak,
        "forward_mib": peak - 300,
    }


def test_checks_compare_at_16k_and_scale_to_1m():
    rows = [
        _row("longmm", "bf16", 16384, 2.0, 600),
        _row("longformer", "fp32", 16384, 12.0, 2400),
        _row("longmm", "bf16", 262144, 36.0, 1500),
        _row("longmm", "bf16", 1048576, 150.0, 5000),
    ]
    got = E.checks(rows)
    assert got["16k_speedup_longmm_bf16_vs_longformer_fp32"] == 6.0
    assert got["16k_peak_ratio_longmm_bf16_vs_longformer_fp32"] == 0.25
    assert got["time_256k_over_16k"] == 18.0
    assert got["met_5x_speed_16k"] and got["met_third_memory_16k"] and got["met_linear_256k"]
    assert got["within_8gib_1m"]
    rows[1]["tokens_per_s"] = 16384 / 4.0
    assert not E.checks(rows)["met_5x_speed_16k"]


def test_cli_writes_json_and_table(tmp_path, capsys):
    from longmm.cli.bench import main

    out = tmp_path / "eff.json"
    main(
        [
            "efficiency",
            "--lengths",
            "",
            "--ours-lengths",
            "600",
            "--precisions",
            "fp32",
            "--json",
            str(out),
            "--threads",
            "1",
        ]
    )
    data = json.loads(out.read_text())
    (row,) = data["rows"]
    assert row["impl"] == "longmm" and row["tokens"] == 600, row
    assert row["tokens_per_s"] > 0 and row["peak_mib"] > 100  # a real process's resident set
    assert "| longmm | fp32 | 600 |" in capsys.readouterr().out


def test_bad_lengths_are_named():
    with pytest.raises(LongmmError, match="comma-separated integers"):
        E._lengths("4k", (1,))


def test_a_run_past_its_memory_limit_is_an_error_row_not_an_oom_kill():
    row = E.measure_in_child("longmm", 4096, "fp32", 1, 1, timeout=300, memory_limit_mib=200)
    assert row["error"] == "out of memory (limit 200 MiB)" and "seconds" not in row

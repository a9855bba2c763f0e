"""The console entry point starts `read` without the training stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_read_with_bm25_does_not_import_torch(tmp_path: Path) -> None:
    doc = tmp_path / "note.txt"
    doc.write_text("Minutes of the meeting.\n\nThe pass key is 41234. Remember it.\n\nEnd.\n")
    args = ["read", str(doc), "--ask", "What is the pass key?", "--strategy", "bm25", "--json"]
    code = (
        "import sys\n"
        "from longmm.entry import main\n"
        f"main({args!r})\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'lightning' not in sys.modules, 'lightning was imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert "41234" in answer["answer"]
    assert answer["evidence"][0]["source"] == str(doc)


def test_entry_point_reports_read_errors_without_a_traceback(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "longmm.entry", "read", str(empty), "--ask", "Anything?"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "error:" in result.stderr and "empty.txt" in result.stderr
    assert "Traceback" not in result.stderr

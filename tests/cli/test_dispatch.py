"""The console entry point starts `read` without the training stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def test_read_with_bm25_does_not_import_torch(tmp_path: Path, run_light_main) -> None:
    doc = tmp_path / "note.txt"
    doc.write_text("Minutes of the meeting.\n\nThe pass key is 41234. Remember it.\n\nEnd.\n")
    args = ["read", str(doc), "--ask", "What is the pass key?", "--strategy", "bm25"]
    args += ["--answer", "sentence", "--no-rerank", "--json"]
    result = run_light_main("longmm.cli", args, absent=("torch", "lightning"))
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)["answers"][0]
    assert "41234" in answer["answer"]
    assert answer["evidence"][0]["source"] == str(doc)


def test_entry_point_reports_read_errors_without_a_traceback(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "longmm.cli", "read", str(empty), "--ask", "Anything?"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "error:" in result.stderr and "empty.txt" in result.stderr
    assert "Traceback" not in result.stderr


def test_read_answers_with_the_span_head_and_falls_back_to_a_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from longmm.cli.read import main as read

    doc = tmp_path / "minutes.md"
    doc.write_text(
        "# Minutes\n\nThe committee met on Tuesday to review the budget.\n\n"
        "## Access\n\nThe pass key is 41234. Remember it.\n\n"
        "## Other business\n\nNothing else was raised, and the meeting closed at noon.\n"
    )
    questions = ["What is the pass key?", "When did the meeting close?"]
    read([str(doc), "--strategy", "bm25", "--json", *(a for q in questions for a in ("--ask", q))])
    key, close = json.loads(capsys.readouterr().out)["answers"]
    assert key["answer"] == "41234"  # a span, not its sentence
    assert key["answer_span"]["score"] > 0
    assert key["answer_span"]["sentence"] == "The pass key is 41234."  # the span's context
    # Whatever the head makes of the second question, the answer is a confident span or the
    # sentence that holds it, cited by its offsets in the document.
    span = close["answer_span"]
    assert doc.read_text()[span["start"] : span["end"]] == close["answer"]
    assert "noon" in close["answer"] or span["score"] > 0


def test_first_answer_takes_the_first_extractor_that_answers() -> None:
    from longmm.reading.answer import AnswerSpan, Evidence, FirstAnswer

    class Never:
        def extract(self, question: str, passages: object) -> None:
            return None

    class Always:
        def extract(self, question: str, passages: object) -> AnswerSpan:
            return AnswerSpan("x", 0, 0, 1, 1.0)

    passages = [Evidence(text="x", source="s", start=0, end=1)]
    assert FirstAnswer(Never(), Always()).extract("q", passages).text == "x"
    assert FirstAnswer(Never()).extract("q", passages) is None
    with pytest.raises(ValueError):
        FirstAnswer()


def test_help_is_instant_and_names_every_command(run_light_main) -> None:
    result = run_light_main("longmm.cli", ["--help"], timeout=60)
    assert result.returncode == 0, result.stderr
    from longmm.cli import COMMANDS, LIGHTNING_COMMANDS

    listed = {line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ")}
    shown = set(COMMANDS) - {"predict-onnx"} | set(LIGHTNING_COMMANDS) | {"quickstart"}
    assert shown <= listed, shown - listed


def test_openmp_spin_default_leaves_a_users_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from longmm.cli import set_openmp_defaults

    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    set_openmp_defaults()
    assert os.environ["GOMP_SPINCOUNT"] == "1000"
    monkeypatch.setenv("GOMP_SPINCOUNT", "300000")
    set_openmp_defaults()
    assert os.environ["GOMP_SPINCOUNT"] == "300000"


def test_every_command_names_a_module_with_its_function() -> None:
    """Each command lives in its own module of ``longmm.cli``; the table names what exists
    (checked without importing the modules: most pull in torch)."""
    import ast
    import importlib.util

    from longmm.cli import COMMANDS

    for command, target in COMMANDS.items():
        module, _, function = target.partition(":")
        assert module.startswith("longmm.cli."), command
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin, module
        tree = ast.parse(Path(spec.origin).read_text())
        names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert function in names, f"{command}: {module} has no {function}()"


def test_serve_hands_its_arguments_to_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    import longmm.deploy.serve
    from longmm.cli import main

    seen: list[list[str]] = []
    monkeypatch.setattr(longmm.deploy.serve, "main", seen.append)
    main(["serve", "runs/x", "--port", "8123"])
    assert seen == [["runs/x", "--port", "8123"]]


def test_unknown_command_exits_2_with_the_usage(capsys: pytest.CaptureFixture[str]) -> None:
    from longmm.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_python_dash_m_and_the_old_entry_name_run_the_same_dispatcher() -> None:
    runs = {
        "longmm.cli": "import runpy, sys; sys.argv = ['x', '--help']; "
        "runpy.run_module('longmm.cli', run_name='__main__')",
        "longmm.entry": "from longmm.entry import main; main(['--help'])",
    }
    for module, code in runs.items():
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("usage: longmm COMMAND"), module

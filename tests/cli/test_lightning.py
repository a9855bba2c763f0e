"""The longmm command end to end: fit writes a complete run folder; bad checkpoints are
named; a killed run resumes to the same result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from longmm.cli import main
from longmm.runs import load_weights, read_checkpoint
from longmm.tasks import Classify

KILLER = """\
import os, signal
import lightning as L


class KillAtEpoch(L.Callback):
    '''SIGKILL this process when epoch ``epoch`` starts: a real crash, mid-training.'''

    def __init__(self, epoch: int = 2) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)
"""


def run_cli(
    *args: str, env: dict | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "longmm.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=300,
    )


def test_fit_writes_the_run_folder(tiny_recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    main(["fit", "--config", str(tiny_recipe), "--out", str(out)])
    for name in (
        "config.yaml",
        "metrics.json",
        "report.md",
        "data.json",
        "checkpoints/best.safetensors",
        "checkpoints/last.ckpt",
        "checkpoints/best.ckpt",
        "plots/confusion_matrix.png",
        "plots/curves.png",
        "logs/version_0/metrics.csv",
    ):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    for key in (
        "accuracy",
        "precision_macro",
        "recall_macro",
        "f1_macro",
        "balanced_accuracy",
        "per_class",
    ):
        assert key in metrics["test"], key
    assert set(metrics["test"]["per_class"]) == {str(d) for d in range(10)}
    assert metrics["val"]["count"] == 180 and metrics["test"]["count"] == 359
    assert metrics["seconds"] > 0
    assert metrics["test"]["accuracy"] > 0.5  # 3 epochs of a small CNN: far above chance
    weights = load_weights(out / "checkpoints" / "best.safetensors")
    assert any(k.startswith("head.") for k in weights)
    # The checkpoint alone rebuilds the model from the recipe saved inside it.
    model = Classify.load_from_checkpoint(out / "checkpoints" / "best.ckpt")
    assert model.num_classes == 10 and type(model.encoders["image"]).__name__ == "ArticleCNN"
    assert torch.equal(model.state_dict()["head.1.weight"], weights["head.1.weight"])
    report = (out / "report.md").read_text()
    assert "| accuracy |" in report and "plots/confusion_matrix.png" in report
    # No temporary files are left behind by the atomic writes.
    assert not list(out.rglob("*.tmp"))
    # The resolved config reruns as a recipe.
    assert "longmm.tasks.Classify" in (out / "config.yaml").read_text()


def test_test_and_predict_from_a_run_folder(tiny_recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    main(["fit", "--config", str(tiny_recipe), "--trainer.max_epochs", "1", "--out", str(out)])
    ckpt = str(out / "checkpoints" / "best.ckpt")
    config = str(out / "config.yaml")
    main(["test", "--config", config, "--ckpt_path", ckpt])
    tested = json.loads((out / "metrics_test.json").read_text())
    fitted = json.loads((out / "metrics.json").read_text())
    assert tested["accuracy"] == fitted["test"]["accuracy"]
    main(["predict", "--config", config, "--ckpt_path", ckpt])
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 359 and [r["index"] for r in rows] == list(range(359))
    accuracy = sum(r["pred"] == r["label"] for r in rows) / len(rows)
    assert accuracy == pytest.approx(fitted["test"]["accuracy"], abs=1e-6)


def test_overrides_in_the_usual_form(tiny_recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    main(
        [
            "fit",
            "--config",
            str(tiny_recipe),
            "--trainer.max_epochs",
            "1",
            "--data.batch_size",
            "128",
            "--out",
            str(out),
        ]
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 1
    assert "batch_size: 128" in (out / "config.yaml").read_text()


def test_corrupt_checkpoint_is_named(tiny_recipe: Path, tmp_path: Path) -> None:
    bad = tmp_path / "broken.ckpt"
    bad.write_bytes(b"PK\x03\x04 this is not a whole checkpoint")
    result = run_cli(
        "test", "--config", str(tiny_recipe), "--ckpt_path", str(bad), "--out", str(tmp_path / "r")
    )
    assert result.returncode == 2
    assert str(bad) in result.stderr and "corrupt" in result.stderr
    assert "Traceback" not in result.stderr


def test_truncated_checkpoint_is_named(tiny_recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    main(["fit", "--config", str(tiny_recipe), "--trainer.max_epochs", "1", "--out", str(out)])
    data = (out / "checkpoints" / "last.ckpt").read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[: len(data) // 2])
    result = run_cli(
        "fit", "--config", str(tiny_recipe), "--ckpt_path", str(cut), "--out", str(out)
    )
    assert result.returncode == 2
    assert f"{cut}: truncated or corrupt checkpoint" in result.stderr


def test_killed_run_resumes_to_the_same_result(tiny_recipe: Path, tmp_path: Path) -> None:
    epochs = ["--trainer.max_epochs", "4"]
    whole = tmp_path / "whole"
    main(["fit", "--config", str(tiny_recipe), *epochs, "--out", str(whole)])
    assert read_checkpoint(whole / "checkpoints" / "last.ckpt")["epoch"] == 3

    (tmp_path / "killer.py").write_text(KILLER)
    kill_cfg = tmp_path / "kill.yaml"
    kill_cfg.write_text(
        "trainer:\n  callbacks:\n"
        "    - class_path: killer.KillAtEpoch\n      init_args: {epoch: 2}\n"
    )
    crashed = tmp_path / "crashed"
    env = {"PYTHONPATH": str(tmp_path)}
    first = run_cli(
        "fit",
        "--config",
        str(tiny_recipe),
        "--config",
        str(kill_cfg),
        *epochs,
        "--out",
        str(crashed),
        env=env,
    )
    assert first.returncode == -9, first.stderr[-2000:]
    last = read_checkpoint(crashed / "checkpoints" / "last.ckpt")
    assert last["epoch"] == 1  # the end of the last whole epoch, improved or not
    assert not (crashed / "metrics.json").exists()

    resumed = run_cli(
        "fit", "--config", str(tiny_recipe), *epochs, "--out", str(crashed), "--ckpt_path", "last"
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = json.loads((whole / "metrics.json").read_text())
    b = json.loads((crashed / "metrics.json").read_text())
    assert a["test"] == b["test"]
    assert a["val"] == b["val"]
    wa = load_weights(whole / "checkpoints" / "best.safetensors")
    wb = load_weights(crashed / "checkpoints" / "best.safetensors")
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_unknown_command_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--help"])
    assert "quickstart" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2


def test_a_misspelt_option_gets_a_short_usage_and_names_the_option(
    tiny_recipe: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(tiny_recipe), "--data.batch_sise", "3"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "'batch_sise' is not accepted" in err
    before_error = err[: err.index("error:")].strip().splitlines()
    assert before_error[0].startswith("usage:") and len(before_error) <= 2, before_error
    with pytest.raises(SystemExit):  # --help still lists every option
        main(["fit", "--help"])
    assert "--trainer.max_epochs" in capsys.readouterr().out


def test_data_list_and_inspect(capsys: pytest.CaptureFixture[str]) -> None:
    main(["data", "list"])
    out = capsys.readouterr().out
    assert "digits" in out and "spoken-digits" in out and "mnist" in out and "manifest" in out
    main(["data", "inspect", "digits", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["splits"]["all"]["count"] == 1797
    assert report["splits"]["all"]["image_shapes"] == {"(8, 8, 1)": 1797}


FOLDER_RECIPE = """\
model:
  class_path: longmm.tasks.Classify
  init_args:
    encoders:
      image:
        class_path: longmm.encoders.ArticleCNN
        init_args: {in_channels: 3, image_size: 8, dim: 16}
data:
  class_path: longmm.data.ImageData
  init_args: {root: ROOT, image_size: 8, channels: 3, split: [0.5, 0.25, 0.25], batch_size: 8}
trainer: {max_epochs: 1, enable_progress_bar: false, enable_model_summary: false}
"""


def test_bad_image_stops_the_run_or_is_listed_in_the_report(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(
                root / label / f"{i}.png"
            )
    (root / "b" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    recipe = tmp_path / "folder.yaml"
    recipe.write_text(FOLDER_RECIPE.replace("ROOT", str(root)))

    failed = run_cli("fit", "--config", str(recipe), "--out", str(tmp_path / "r1"))
    assert failed.returncode == 2
    assert "bad.jpg" in failed.stderr and "Traceback" not in failed.stderr
    assert not (tmp_path / "r1" / "metrics.json").exists()

    out = tmp_path / "r2"
    main(["fit", "--config", str(recipe), "--data.skip_bad", "true", "--out", str(out)])
    report = (out / "report.md").read_text()
    assert "Skipped inputs (1)" in report and "bad.jpg" in report

"""``longmm bench fusion``: the configs it derives from a recipe, the per-seed runs (fit, then
test with each modality missing), the rows, JSON, plot and docs table."""

from __future__ import annotations

import argparse
import gzip
import json
import struct
import subprocess
from pathlib import Path

import numpy as np
import soundfile
import torch

from longmm.bench.fusion import (
    BASELINES,
    STRATEGIES,
    missing_args,
    recipe_configs,
    run_fusion_bench,
    run_seed,
)
from longmm.cli import main

ROOT = Path(__file__).resolve().parents[2]


def options(tmp_path: Path, **kwargs) -> argparse.Namespace:
    shared = tmp_path / "shared"
    shared.mkdir(exist_ok=True)
    base = {
        "quick": False,
        "seeds": 2,
        "epochs": None,
        "json": str(tmp_path / "out" / "fusion.json"),
        "plot": None,
        "recipe": str(ROOT / "recipes" / "fusion_av_mnist_fsdd.yaml"),
        "runs": str(tmp_path / "runs"),
        "shared": str(shared),
        "only": None,
        "docs": str(tmp_path / "results.md"),
        "argv": ["--seeds", "2"],
    }
    return argparse.Namespace(**(base | kwargs))


class FakeLongmm:
    """Writes what ``longmm fit`` / ``longmm test`` would, with made-up accuracies."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, args: list[str]) -> subprocess.CompletedProcess:
        self.calls.append(args)
        out = Path(args[args.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        if args[0] == "fit":
            name = out.parent.name
            seed = int(args[args.index("--seed_everything") + 1])
            accuracy = {"image_only": 0.7, "audio_only": 0.75}.get(name, 0.9 - 0.01 * seed)
            (out / "metrics.json").write_text(
                json.dumps({"test": {"accuracy": accuracy}, "seconds": 12.5, "epochs": 8})
            )
            (out / "checkpoints").mkdir(exist_ok=True)
            state = {"w": torch.zeros(3, 4), "bn.running_mean": torch.zeros(4)}
            torch.save({"state_dict": state}, out / "checkpoints" / "best.ckpt")
        else:
            missing = args[args.index("--data.init_args.drop_at_test") + 1]
            accuracy = 0.6 if missing == "[image]" else 0.5
            (out / "metrics_test.json").write_text(json.dumps({"accuracy": accuracy}))
        return subprocess.CompletedProcess(args, 0, "", "")


def test_configs_share_the_recipe_encoders_and_fusion_width() -> None:
    recipe = ROOT / "recipes" / "fusion_av_mnist_fsdd.yaml"
    configs = {c.name: c for c in recipe_configs(recipe)}
    assert list(configs) == [*STRATEGIES, *BASELINES]
    fusion = json.loads(configs["graph"].overrides[1])
    assert fusion["class_path"] == "longmm.fusion.GraphFusion"
    assert fusion["init_args"]["out_dim"] == 64
    encoders = json.loads(configs["audio_only"].overrides[1])
    assert list(encoders) == ["audio"] and configs["audio_only"].overrides[3] == "null"
    # The recipe's modality dropout has nothing to drop in a single-modality baseline.
    assert configs["audio_only"].overrides[4:] == ("--model.init_args.modality_dropout", "null")


def test_rows_json_plot_and_table_from_fake_runs(tmp_path: Path) -> None:
    fake = FakeLongmm()
    opts = options(tmp_path)
    (tmp_path / "results.md").write_text(
        "# Results\n\n<!-- bench:fusion -->\nold\n<!-- /bench:fusion -->\n"
    )
    result = run_fusion_bench(opts, runner=fake)
    saved = json.loads((tmp_path / "out" / "fusion.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(result["rows"]))
    rows = {r["strategy"]: r for r in saved["rows"]}
    assert set(rows) == {*STRATEGIES, *BASELINES}
    concat = rows["concat"]
    assert concat["accuracy_mean"] == 0.895 and concat["accuracy_std"] == 0.0071
    assert concat["params"] == 12 and concat["train_seconds"] == 12.5
    assert concat["missing"] == {"image": 0.6, "audio": 0.5}
    # A model without its only modality cannot predict: null, and no test is run for it.
    assert rows["image_only"]["missing"] == {"image": None, "audio": 0.5}
    assert rows["audio_only"]["missing"] == {"image": 0.6, "audio": None}
    fits = [c for c in fake.calls if c[0] == "fit"]
    tests = [c for c in fake.calls if c[0] == "test"]
    assert len(fits) == 9 * 2 and len(tests) == 7 * 2 * 2 + 2 * 2
    assert all("--data.root" in c for c in fits)
    assert saved["verdict"]["gain_points"] == 14.5 and saved["verdict"]["beat_concat"] == []
    assert (tmp_path / "out" / "fusion.png").stat().st_size > 1000
    docs = (tmp_path / "results.md").read_text()
    assert "old" not in docs and docs.count("<!-- bench:fusion -->") == 1
    assert "| image_only | 70.00 ± 0.00 | — | 50.00 |" in docs
    assert "longmm fit --config" in docs and "drop_at_test" in docs


def test_parallel_jobs_give_the_same_rows(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = run_fusion_bench(options(tmp_path / "a", docs=""), runner=FakeLongmm())
    fake = FakeLongmm()
    two = run_fusion_bench(options(tmp_path / "b", docs="", jobs=2), runner=fake)
    assert len(fake.calls) == 9 * 2 + 7 * 2 * 2 + 2 * 2
    assert two["jobs"] == 2
    strip = ("runs", "run", "command")

    def comparable(rows: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if k not in strip} for r in rows]

    assert comparable(two["rows"]) == comparable(one["rows"])
    assert [s["seed"] for s in two["rows"][0]["runs"]] == [0, 1]


def write_tiny_real(root: Path) -> Path:
    """A few 8x8 MNIST-format images and FSDD-named tones: enough for a 1-epoch run."""
    rng = np.random.default_rng(0)
    labels = np.arange(48) % 3
    images = np.zeros((48, 8, 8), dtype=np.uint8)
    for i, y in enumerate(labels):
        images[i, :, 2 * y + 1] = 220
    images = np.clip(images + rng.integers(0, 30, images.shape), 0, 255).astype(np.uint8)
    (root / "mnist").mkdir(parents=True)
    with gzip.open(root / "mnist" / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 2051, 48, 8, 8) + images.tobytes())
    with gzip.open(root / "mnist" / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 2049, 48) + labels.astype(np.uint8).tobytes())
    rec = root / "fsdd" / "recordings"
    rec.mkdir(parents=True)
    t = np.arange(800) / 8000
    for d in range(3):
        for take in range(12):
            wave = 0.3 * np.sin(2 * np.pi * (300 + 250 * d) * t)
            soundfile.write(rec / f"{d}_ann_{take}.wav", wave.astype(np.float32), 8000)
    return root


TINY_RECIPE = """\
model:
  class_path: longmm.tasks.Classify
  init_args:
    encoders:
      image:
        class_path: longmm.encoders.ResNetCNN
        init_args: {in_channels: 1, image_size: 8, widths: [8, 16], dim: 16}
      audio:
        class_path: longmm.encoders.AudioCNN
        init_args: {n_mels: 16, dim: 16, channels: [8, 16]}
    fusion:
      class_path: longmm.fusion.WeightedFusion
      init_args: {out_dim: 16}
data:
  class_path: longmm.data.AVDigits
  init_args:
    format: mnist-fsdd
    image_noise: 0.2
    audio_snr_db: 10
    n_mels: 16
    split: [0.5, 0.25, 0.25]
    batch_size: 16
trainer: {max_epochs: 1, enable_model_summary: false, logger: false}
"""


def in_process(args: list[str]) -> subprocess.CompletedProcess:
    main(args)
    return subprocess.CompletedProcess(args, 0, "", "")


def test_real_fit_then_test_with_each_modality_missing(tmp_path: Path) -> None:
    data = write_tiny_real(tmp_path / "data")
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_RECIPE)
    configs = {c.name: c for c in recipe_configs(recipe, ["concat", "audio_only"])}
    assert set(configs) == {"concat", "audio_only"}
    runs = tmp_path / "runs"
    row = run_seed(configs["concat"], str(recipe), runs, 0, str(data), None, in_process)
    assert row["status"] == "ok", row
    assert set(row["missing"]) == {"image", "audio"}
    assert all(0.0 <= v <= 1.0 for v in row["missing"].values())
    assert row["params"] and row["params"] > 1000
    # The test form the bench prints: the run's own config, its best checkpoint, an override.
    assert "--data.init_args.drop_at_test" in missing_args(runs / "concat" / "seed0", "image")
    tested = json.loads(
        (runs / "concat" / "seed0" / "missing_audio" / "metrics_test.json").read_text()
    )
    assert tested["count"] == 12
    single = run_seed(configs["audio_only"], str(recipe), runs, 0, str(data), None, in_process)
    assert single["status"] == "ok" and single["missing"]["audio"] is None
    assert single["missing"]["image"] == single["accuracy"]  # it never reads the image

"""Tiny real runs (a few training steps on embedded data) for the deployment tests."""

from __future__ import annotations

from pathlib import Path

import pytest

IMAGE_RECIPE = """\
seed_everything: 1
model:
  class_path: longmm.tasks.Classify
  init_args:
    encoders:
      image:
        class_path: longmm.encoders.ResNetCNN
        init_args: {in_channels: 1, image_size: 8, widths: [8, 16], dim: 16, dropout: 0.1}
    lr: 0.01
data:
  class_path: longmm.data.ImageData
  init_args: {format: digits, split: [0.7, 0.1, 0.2], batch_size: 64, eval_batch_size: 128}
trainer:
  max_epochs: 4
  limit_train_batches: 16
  enable_progress_bar: false
  enable_model_summary: false
"""

TEXT_RECIPE = """\
seed_everything: 1
model:
  class_path: longmm.tasks.Classify
  init_args:
    encoders:
      text:
        class_path: longmm.encoders.text.BiRNNEncoder
        init_args: {vocab_size: 300, embed_dim: 16, hidden: 16, cell: lstm, pooling: max}
    lr: 0.01
data:
  class_path: longmm.data.TextData
  init_args:
    format: sentiment
    vocab_size: 300
    min_frequency: 1
    split: [0.8, 0.1, 0.1]
    batch_size: 64
    eval_batch_size: 100
    bucket_by_length: true
trainer:
  max_epochs: 1
  limit_train_batches: 6
  enable_progress_bar: false
  enable_model_summary: false
"""


def fit(recipe: str, folder: Path) -> Path:
    from longmm.cli import main

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.yaml"
    path.write_text(recipe)
    run = folder / "run"
    main(["fit", "--config", str(path), "--out", str(run)])
    assert (run / "checkpoints" / "best.ckpt").is_file()
    return run


@pytest.fixture(scope="session")
def image_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fit(IMAGE_RECIPE, tmp_path_factory.mktemp("image"))


@pytest.fixture(scope="session")
def text_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fit(TEXT_RECIPE, tmp_path_factory.mktemp("text"))


@pytest.fixture(scope="session")
def image_export(image_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from longmm.deploy.export import export_run

    out = tmp_path_factory.mktemp("image_export")
    export_run(image_run, out, quantize="int8", repeats=1, latency_samples=4)
    return out


@pytest.fixture(scope="session")
def text_export(text_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from longmm.deploy.export import export_run

    out = tmp_path_factory.mktemp("text_export")
    export_run(text_run, out, quantize="int8", repeats=1, latency_samples=4)
    return out

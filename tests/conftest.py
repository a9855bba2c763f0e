"""Shared fixtures: small recipes written into each test's own folder."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

os.environ.setdefault("PYTHONHASHSEED", "0")

TINY_RECIPE = """\
seed_everything: 3
model:
  class_path: longmm.tasks.Classify
  init_args:
    encoders:
      image:
        class_path: longmm.encoders.ArticleCNN
        init_args: {in_channels: 1, image_size: 8, dim: 32, dropout: 0.2}
    optimizer: adamw
    lr: 0.003
    scheduler: cosine
data:
  class_path: longmm.data.ImageData
  init_args:
    format: digits
    split: [0.7, 0.1, 0.2]
    batch_size: 64
    augment:
      class_path: longmm.data.image.ImageAugment
      init_args: {degrees: 5, translate: 0.05}
trainer:
  max_epochs: 3
  enable_progress_bar: false
  enable_model_summary: false
"""


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_RECIPE)
    return path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    for item in items:
        if "needs_shared" in item.keywords and not shared.is_dir():
            item.add_marker(pytest.mark.skip(reason=f"shared data folder {shared} is missing"))


@pytest.fixture
def run_light_main() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runs ``from MODULE import main; main(ARGS)`` in a fresh interpreter, which then fails
    if any module in ``absent`` was imported: the light entry points stay off the training
    stack."""

    def run(
        module: str, args: list[str], absent: Sequence[str] = ("torch",), timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        code = f"import sys\nfrom {module} import main\nmain({args!r})\n" + "".join(
            f"assert {name!r} not in sys.modules, '{name} was imported'\n" for name in absent
        )
        return subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
        )

    return run

"""The torch-free ONNX runtime: same predictions as the trained model, no torch imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from longmm.deploy.loading import load_run, prepare
from longmm.deploy.runtime import OnnxClassifier
from longmm.errors import DataError


def _test_images(run_dir: Path, n: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Raw uint8 test images of the run and the trained model's logits on them."""
    run = load_run(run_dir)
    ds = run.datamodule.datasets["test"]
    items = [ds[i] for i in range(n)]
    batch = prepare(run.datamodule, {"image": torch.stack([it["image"] for it in items])})
    with torch.no_grad():
        logits = run.model(batch).numpy()
    return [it["image"].permute(1, 2, 0).numpy() for it in items], logits


def test_runtime_matches_the_model_on_raw_images(image_run: Path, image_export: Path) -> None:
    images, logits = _test_images(image_run, 12)
    clf = OnnxClassifier(image_export, model="fp32")
    np.testing.assert_allclose(clf.logits([{"image": a} for a in images]), logits, atol=1e-4)
    int8 = OnnxClassifier(image_export)  # the int8 model by default
    assert int8.model_kind == "int8"
    rows = int8.predict([{"image": a} for a in images])
    agree = np.mean(
        [r["pred"] == int8.classes[k] for r, k in zip(rows, logits.argmax(1), strict=True)]
    )
    assert agree >= 0.8
    assert all(abs(sum(r["probs"].values()) - 1) < 1e-4 for r in rows)


def test_runtime_matches_the_model_on_raw_text(text_run: Path, text_export: Path) -> None:
    run = load_run(text_run)
    dm = run.datamodule
    texts = [s.inputs["text"] for s in dm.samples["test"][:10]]
    ids, mask = dm.tokenizer.encode_batch(texts, dm.max_length)
    with torch.no_grad():
        logits = run.model({"text": ids, "text_mask": mask}).numpy()
    clf = OnnxClassifier(text_export, model="fp32")
    np.testing.assert_allclose(clf.logits([{"text": t} for t in texts]), logits, atol=1e-4)


def test_predict_command_does_not_import_torch(image_export: Path, tmp_path: Path) -> None:
    images, logits = _test_images(
        Path(json.loads((image_export / "export.json").read_text())["source_run"]), 3
    )
    paths = []
    for i, array in enumerate(images):
        paths.append(tmp_path / f"digit{i}.png")
        Image.fromarray(array[:, :, 0]).save(paths[-1])
    out = tmp_path / "pred.jsonl"
    code = (
        "import sys\n"
        "from longmm.deploy.runtime import main\n"
        f"main({[str(image_export), *map(str, paths), '--model', 'fp32', '--out', str(out)]!r})\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'lightning' not in sys.modules\n"
        "print('TORCH-FREE')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "TORCH-FREE" in result.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["input"] for r in rows] == [str(p) for p in paths]
    classes = json.loads((image_export / "export.json").read_text())["classes"]
    assert [r["pred"] for r in rows] == [classes[k] for k in logits.argmax(1)]


def test_predict_engine_onnx_through_the_longmm_command(text_export: Path, run_light_main) -> None:
    """The console entry point (longmm.entry) reaches the runtime without importing torch."""
    args = ["predict", "--engine", "onnx", str(text_export), "--text", "the plot was not bad"]
    result = run_light_main("longmm.entry", args)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 1 and rows[0]["pred"] in ("negative", "positive")


def test_longmm_cli_main_also_takes_the_onnx_engine(
    text_export: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from longmm.cli import main

    main(["predict", "--engine=onnx", str(text_export), "--text", "a fine film"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 1 and rows[0]["pred"] in ("negative", "positive")


def test_runtime_names_bad_input(image_export: Path, tmp_path: Path) -> None:
    from longmm.deploy.runtime import read_samples

    clf = OnnxClassifier(image_export)
    with pytest.raises(DataError, match="missing field"):
        clf.predict([{"text": "hello"}])
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png: not a readable image"):
        clf.predict(read_samples([str(bad)], [], None, ["image"]))
    with pytest.raises(DataError, match="unknown input type"):
        read_samples([str(image_export / "export.json")], [], None, ["image"])
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"image": "a.png"}\n{not json\n')
    with pytest.raises(DataError, match=r"m.jsonl:2: not valid JSON"):
        read_samples([], [], str(manifest), ["image"])


FUSION_RECIPE = """\
seed_everything: 1
model:
  class_path: longmm.tasks.Classify
  init_args:
    encoders:
      image:
        class_path: longmm.encoders.ResNetCNN
        init_args: {in_channels: 1, image_size: 8, widths: [8, 16], dim: 16}
      audio:
        class_path: longmm.encoders.AudioCNN
        init_args: {n_mels: 40, dim: 16, channels: [8, 16]}
    fusion:
      class_path: longmm.fusion.WeightedFusion
      init_args: {out_dim: 16}
    attribution_samples: 0
data:
  class_path: longmm.data.AVDigits
  init_args: {image_noise: 0.3, audio_snr_db: 0, batch_size: 64}
trainer:
  max_epochs: 1
  limit_train_batches: 4
  enable_progress_bar: false
  enable_model_summary: false
"""


@pytest.mark.slow
def test_fusion_export_and_numpy_log_mel_match_the_model(tmp_path: Path) -> None:
    """Image + audio: the runtime's numpy STFT/log-mel and image path give the logits of the
    trained fusion model on the same raw (corrupted) pairs, and int8 is static."""
    from longmm.deploy.export import export_run

    from .conftest import fit

    run_dir = fit(FUSION_RECIPE, tmp_path / "av")
    report = export_run(run_dir, tmp_path / "export", quantize="int8", repeats=1)
    assert report["parity"]["max_abs_diff"] <= 1e-4
    assert report["quantization"]["method"] == "static"
    run = load_run(run_dir)
    dm = run.datamodule
    ds = dm.datasets["test"]
    items = [ds[i] for i in range(16)]
    with torch.no_grad():
        logits = run.model(prepare(dm, dm.collate_fn()(items))).numpy()
    samples = [
        {"image": it["image"].permute(1, 2, 0).numpy(), "audio": (it["audio"].numpy(), 8000)}
        for it in items
    ]
    clf = OnnxClassifier(tmp_path / "export", model="fp32")
    np.testing.assert_allclose(clf.logits(samples), logits, atol=1e-4)

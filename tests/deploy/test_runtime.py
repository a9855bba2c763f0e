"""The torch-free ONNX runtime: same predictions as the trained model, no torch imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from longmm.deploy.loading import load_run, prepare
from longmm.deploy.runtime import OnnxClassifier, read_manifest, softmax
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
    """The console entry point (longmm.cli) reaches the runtime without importing torch."""
    args = ["predict", "--engine", "onnx", str(text_export), "--text", "the plot was not bad"]
    result = run_light_main("longmm.cli", args)
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
    with pytest.raises(
        DataError, match=r"sample 0: field 'image': missing .*reads \['image'\], not \['text'\]"
    ):
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
    manifest.write_text('{"image": "a.png"}\n{"text": "hello"}\n')
    with pytest.raises(DataError, match=r"m.jsonl:2: field 'image': missing"):
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


@pytest.fixture(scope="module")
def fusion_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """A tiny image + audio fusion run, its export (fp32 + static int8) and export report."""
    from longmm.deploy.export import export_run

    from .conftest import fit

    tmp = tmp_path_factory.mktemp("av")
    run_dir = fit(FUSION_RECIPE, tmp / "av")
    report = export_run(run_dir, tmp / "export", quantize="int8", repeats=1)
    return run_dir, tmp / "export", report


def _fusion_items(run_dir: Path, n: int) -> tuple[Any, list[dict]]:
    run = load_run(run_dir)
    ds = run.datamodule.datasets["test"]
    return run, [ds[i] for i in range(n)]


def _raw(item: dict, audio: bool = True) -> dict[str, Any]:
    sample: dict[str, Any] = {"image": item["image"].permute(1, 2, 0).numpy()}
    if audio:
        sample["audio"] = (item["audio"].numpy(), 8000)
    return sample


@pytest.mark.slow
def test_fusion_export_and_numpy_log_mel_match_the_model(
    fusion_export: tuple[Path, Path, dict],
) -> None:
    """Image + audio: the runtime's numpy STFT/log-mel and image path give the logits of the
    trained fusion model on the same raw (corrupted) pairs, and int8 is static."""
    run_dir, export_dir, report = fusion_export
    assert report["parity"]["max_abs_diff"] <= 1e-4
    assert report["quantization"]["method"] == "static"
    run, items = _fusion_items(run_dir, 16)
    dm = run.datamodule
    with torch.no_grad():
        logits = run.model(prepare(dm, dm.collate_fn()(items))).numpy()
    clf = OnnxClassifier(export_dir, model="fp32")
    np.testing.assert_allclose(clf.logits([_raw(it) for it in items]), logits, atol=1e-4)


@pytest.mark.slow
def test_fusion_export_reads_samples_without_audio_as_the_model_does(
    fusion_export: tuple[Path, Path, dict],
) -> None:
    """A sample without audio (left out of a mixed batch, or a whole batch without it) gets
    the probabilities of the torch model with the audio key absent (what the server feeds)
    and of the torch model with that sample's audio mask row all False."""
    run_dir, export_dir, _ = fusion_export
    run, items = _fusion_items(run_dir, 12)
    dm = run.datamodule
    absent = [i for i in range(len(items)) if i % 3 != 1]  # mostly absent, some present
    with torch.no_grad():
        full = prepare(dm, dm.collate_fn()(items))
        image_only = {"image": full["image"]}  # the audio key absent, as the server does
        p_key_absent = torch.softmax(run.model(image_only), dim=-1).numpy()
        masked = dict(full)
        masked["audio_mask"] = full["audio_mask"].clone()
        masked["audio_mask"][absent] = False
        masked["audio"] = full["audio"].masked_fill(~masked["audio_mask"][:, None, :], 0.0)
        p_mask_false = torch.softmax(run.model(masked), dim=-1).numpy()
        p_full = torch.softmax(run.model(full), dim=-1).numpy()
    # The two torch forms of "no audio" agree, and the audio did matter for those samples.
    np.testing.assert_allclose(p_mask_false[absent], p_key_absent[absent], atol=1e-5)
    assert np.abs(p_full[absent] - p_key_absent[absent]).max() > 1e-3

    clf = OnnxClassifier(export_dir, model="fp32")
    assert clf.optional == ["audio"]
    mixed = [_raw(it, audio=i not in absent) for i, it in enumerate(items)]
    p_mixed = softmax(clf.logits(mixed))
    none = softmax(clf.logits([_raw(it, audio=False) for it in items]))  # audio length 1
    assert np.isfinite(p_mixed).all() and np.isfinite(none).all()
    assert np.abs(p_mixed - p_mask_false).max() <= 1e-4
    assert np.abs(p_mixed[absent] - p_key_absent[absent]).max() <= 1e-4
    assert np.abs(none - p_key_absent).max() <= 1e-4
    rows = clf.predict(mixed)  # through predict: the same classes
    assert [r["pred"] for r in rows] == [clf.classes[k] for k in p_mask_false.argmax(1)]
    int8 = OnnxClassifier(export_dir)  # the static int8 graph also takes an absent row
    assert np.isfinite(softmax(int8.logits(mixed))).all()

    with pytest.raises(DataError, match=r"sample 1: field 'image': missing \(this model cannot"):
        clf.predict([_raw(items[0]), {"audio": (items[1]["audio"].numpy(), 8000)}])
    with pytest.raises(DataError, match=r"sample 0: field 'image': missing"):
        clf.logits([{}])
    manifest = run_dir.parent / "none.jsonl"
    manifest.write_text('{"image": "a.png"}\n{"text": "not read by this model"}\n')
    with pytest.raises(DataError, match=r"none.jsonl:2: fields 'image', 'audio': all missing"):
        read_manifest(manifest, list(clf.modalities))


@pytest.mark.slow
def test_fusion_manifest_may_leave_out_audio_not_image(
    fusion_export: tuple[Path, Path, dict], tmp_path: Path
) -> None:
    """``--manifest`` lines without audio (left out or null) predict as the model does
    without audio; a line without image is an error naming the line and the field."""
    import soundfile

    from longmm.deploy.runtime import main

    run_dir, export_dir, _ = fusion_export
    run, items = _fusion_items(run_dir, 3)
    dm = run.datamodule
    lines = []
    for i, it in enumerate(items):
        Image.fromarray(it["image"][0].numpy()).save(tmp_path / f"d{i}.png")
        soundfile.write(tmp_path / f"d{i}.wav", it["audio"].numpy(), 8000, subtype="FLOAT")
        lines.append({"image": f"d{i}.png", "audio": f"d{i}.wav"})
    del lines[1]["audio"]
    lines[2]["audio"] = None
    manifest = tmp_path / "pairs.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "pred.jsonl"
    main([str(export_dir), "--manifest", str(manifest), "--model", "fp32", "--out", str(out)])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    with torch.no_grad():
        full = prepare(dm, dm.collate_fn()(items))
        p_av = torch.softmax(run.model(full), dim=-1).numpy()
        p_image = torch.softmax(run.model({"image": full["image"]}), dim=-1).numpy()
    expected = np.stack([p_av[0], p_image[1], p_image[2]])
    got = np.array([[r["probs"][c] for c in dm.classes] for r in rows])
    assert np.abs(got - expected).max() <= 1e-4

    manifest.write_text(json.dumps(lines[0]) + "\n" + json.dumps({"audio": "d0.wav"}) + "\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "longmm.deploy.runtime",
            str(export_dir),
            "--manifest",
            str(manifest),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert (
        "pairs.jsonl:2: field 'image': missing (this model cannot read a sample without it)"
        in result.stderr
    )

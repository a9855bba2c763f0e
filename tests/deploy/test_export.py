"""ONNX export: parity with eager PyTorch, dynamic axes, int8 quantization, the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from longmm.deploy.loading import load_run, model_inputs, prepared_batches
from longmm.deploy.onnx import OUTPUT, ParityError, check_parity, feeds, session
from longmm.errors import LongmmError


def test_image_export_has_parity_int8_and_a_report(image_run: Path, image_export: Path) -> None:
    report = json.loads((image_export / "report.json").read_text())
    assert report["parity"]["max_abs_diff"] <= 1e-4
    # Parity and accuracy count the test split itself: the 1-sample slice that parity also
    # runs (for the dynamic batch axis) is noted, not counted.
    split = json.loads((image_run / "data.json").read_text())["splits"]["test"]["count"]
    assert split > 300
    assert report["parity"]["samples"] == report["test_samples"] == split
    assert report["parity"]["batches"] == report["test_batches"]
    assert report["parity"]["single_sample_slice"] is True
    markdown = (image_export / "report.md").read_text()
    assert f"Test split: {split} samples in {report['test_batches']} batches" in markdown
    assert f"over the {split} test samples, and a 1-sample slice" in markdown
    assert report["quantization"]["method"] == "static"  # a CNN: calibrated
    engines = report["engines"]
    assert set(engines) == {"torch_fp32", "onnxruntime_fp32", "onnxruntime_int8"}
    metrics = json.loads((image_run / "metrics.json").read_text())
    # The exporter's own torch pass reproduces the run's test accuracy.
    assert engines["torch_fp32"]["accuracy"] == pytest.approx(metrics["test"]["accuracy"], 1e-6)
    assert engines["onnxruntime_fp32"]["accuracy"] == engines["torch_fp32"]["accuracy"]
    assert engines["onnxruntime_int8"]["agreement_with_torch"] >= 0.9
    for row in engines.values():
        assert row["ms_per_sample"] > 0 and row["batch1_ms_median"] > 0
    files = report["files"]
    assert files["onnxruntime_int8"] < files["onnxruntime_fp32"]  # tiny: scales weigh too
    assert "| onnxruntime_int8 |" in (image_export / "report.md").read_text()
    ops = {n.op_type for n in onnx.load(str(image_export / "model.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_text_export_has_dynamic_batch_and_sequence_axes(text_run: Path, text_export: Path) -> None:
    manifest = json.loads((text_export / "export.json").read_text())
    assert manifest["inputs"]["text"]["shape"] == ["batch", "text_len"]
    assert manifest["inputs"]["text_mask"]["shape"] == ["batch", "text_len"]
    assert manifest["quantization"]["method"] == "dynamic"  # an LSTM
    assert (text_export / "tokenizer.json").is_file()
    ops = {n.op_type for n in onnx.load(str(text_export / "model.int8.onnx")).graph.node}
    assert "DynamicQuantizeLSTM" in ops

    run = load_run(text_run)
    sess = session(text_export / "model.onnx")
    # Batches of other sizes and lengths than the one traced, with padding inside.
    batch = next(prepared_batches(run.datamodule, "val"))
    lengths = batch["text_mask"].sum(1)
    assert lengths.min() < lengths.max()
    for rows in (1, 3, len(lengths)):
        sub = {k: v[:rows] for k, v in batch.items()}
        width = int(sub["text_mask"].sum(1).max())
        sub = {k: v[:, :width] if k.startswith("text") else v for k, v in sub.items()}
        with torch.no_grad():
            ref = run.model(sub).numpy()
        out = sess.run([OUTPUT], feeds(sub, ["text", "text_mask"]))[0]
        assert out.shape == ref.shape
        np.testing.assert_allclose(out, ref, atol=1e-4)


def test_parity_check_fails_on_an_unfaithful_model(image_run: Path, image_export: Path) -> None:
    run = load_run(image_run)
    batches = list(prepared_batches(run.datamodule, "test", limit=1))
    names = model_inputs(run.model, batches[0])
    sess = session(image_export / "model.onnx")
    assert check_parity(run.model, sess, batches, names).max_abs_diff <= 1e-4
    with torch.no_grad():
        run.model.head[-1].bias.add_(0.01)  # the eager model now differs from the export
    with pytest.raises(ParityError, match="differs from PyTorch by"):
        check_parity(run.model, sess, batches, names)


def test_export_refuses_bad_input(image_run: Path, tmp_path: Path) -> None:
    from longmm.deploy.export import export_run

    with pytest.raises(LongmmError, match="run folder not found"):
        export_run(tmp_path / "nothing", tmp_path / "out")
    with pytest.raises(LongmmError, match="other than the run folder"):
        export_run(image_run, image_run)


def _av_batch(b: int, t: int) -> dict[str, torch.Tensor]:
    mask = torch.arange(t)[None, :] < torch.randint(t // 2, t + 1, (b,))[:, None]  # (B, T)
    image = torch.randn(b, 1, 8, 8)
    return {"image": image, "audio": torch.randn(b, 40, t) * mask[:, None], "audio_mask": mask}


@pytest.mark.parametrize(
    "fusion",
    [
        "ConcatFusion",
        "WeightedFusion",
        "GatedFusion",
        "LateFusion",
        "TensorFusion",
        "GraphFusion",
        pytest.param(
            "CrossModalFusion",
            marks=pytest.mark.xfail(
                raises=ParityError,
                strict=True,
                reason="nn.MultiheadAttention's traced graph freezes the key length",
            ),
        ),
    ],
)
def test_every_fusion_exports_with_dynamic_batch_and_audio_length(
    fusion: str, tmp_path: Path
) -> None:
    from longmm import fusion as fusions
    from longmm.deploy.onnx import export_onnx
    from longmm.encoders import AudioCNN, ResNetCNN
    from longmm.tasks import Classify

    torch.manual_seed(0)
    encoders = {"image": ResNetCNN(1, 8, [8, 16], dim=16), "audio": AudioCNN(40, 16, [8, 16])}
    cls = getattr(fusions, fusion)
    module = cls() if fusion == "LateFusion" else cls(out_dim=16)
    model = Classify(encoders, fusion=module, num_classes=10).eval()
    names = ["image", "audio", "audio_mask"]
    export_onnx(model, _av_batch(6, 50), names, tmp_path / "m.onnx")
    sess = session(tmp_path / "m.onnx")
    parity = check_parity(model, sess, [_av_batch(3, 37), _av_batch(9, 81)], names)
    assert parity.max_abs_diff <= 1e-4

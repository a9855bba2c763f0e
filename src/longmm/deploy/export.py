"""``longmm export``: a classifier run folder to ONNX (and int8), checked and measured.

    longmm export runs/m --format onnx --quantize int8 --out exports/m

The export folder holds everything the torch-free runtime (``longmm.deploy.runtime``)
needs: ``model.onnx`` (fp32), ``model.int8.onnx`` (with ``--quantize int8``),
``export.json`` (inputs with their dynamic axes, classes, per-modality preprocessing),
``tokenizer.json`` for text, ``mel_filterbank.npy`` for audio, and ``report.json`` /
``report.md``: file sizes, latency against torch eager fp32 on the same test inputs in the
same process and thread count, and test accuracy of each engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from longmm.deploy.loading import LoadedRun, load_run, model_inputs, prepared_batches
from longmm.deploy.onnx import (
    OPSET,
    OUTPUT,
    PARITY_TOLERANCE,
    check_parity,
    dynamic_axes,
    export_onnx,
    feeds,
    quantize_int8,
    session,
    single_sample_latency,
    time_engines,
)
from longmm.errors import LongmmError
from longmm.io import atomic_write_json, atomic_write_text

EXPORT_FILE = "export.json"
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
MEL_FILE = "mel_filterbank.npy"


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    quantize: str | None = None,
    method: str = "auto",
    data_root: str | None = None,
    opset: int = OPSET,
    calibration_batches: int = 16,
    threads: int = 1,
    repeats: int = 3,
    latency_samples: int = 100,
    tolerance: float = PARITY_TOLERANCE,
    command: str = "",
) -> dict[str, Any]:
    """Export, check parity, quantize, measure; write the export folder; return the report."""
    loaded = load_run(run_dir, data_root=data_root)
    out = Path(out_dir)
    if out.resolve() == loaded.path.resolve():
        raise LongmmError(f"--out {out}: choose a folder other than the run folder")
    out.mkdir(parents=True, exist_ok=True)
    model = loaded.model
    test = list(prepared_batches(loaded.datamodule, "test"))
    names = model_inputs(model, test[0])

    fp32 = out / FP32_FILE
    export_onnx(model, test[0], names, fp32, opset=opset)
    sess32 = session(fp32, threads)
    parity = check_parity(model, sess32, test, names, tolerance, where=str(fp32))
    # check_parity also runs a 1-sample slice of the first batch (to prove the dynamic batch
    # axis); its counts include that extra run, so the test split is counted here.
    test_samples = sum(len(b[names[0]]) for b in test)
    slice_note = ", and a 1-sample slice of the first" if parity.batches > len(test) else ""
    print(
        f"parity: max |onnx - torch| = {parity.max_abs_diff:.2e} over {test_samples} "
        f"test samples in {len(test)} batches{slice_note} (tolerance {tolerance:g})"
    )
    sessions = {"onnxruntime_fp32": sess32}
    quantization = None
    if quantize == "int8":
        int8 = out / INT8_FILE
        calibration = (
            feeds(b, names)
            for b in prepared_batches(loaded.datamodule, "train", calibration_batches)
        )
        quantization = quantize_int8(fp32, int8, method, calibration)  # type: ignore[arg-type]
        sessions["onnxruntime_int8"] = session(int8, threads)
        print(f"int8: {quantization['method']} quantization -> {int8}")

    write_manifest(loaded, out, names, test[0], opset, quantization)
    report = measure(loaded, sessions, test, names, threads, repeats, latency_samples)
    report.update(
        {
            "run": str(loaded.path),
            "checkpoint": str(loaded.checkpoint),
            "command": command,
            "machine": machine_note(threads),
            "inputs": {n: list(test[0][n].shape) for n in names},
            "parity": {
                "max_abs_diff": parity.max_abs_diff,
                "tolerance": tolerance,
                "batches": len(test),
                "samples": test_samples,
                "single_sample_slice": parity.batches > len(test),
            },
            "quantization": quantization,
            "files": {
                "torch_fp32_weights": _weights_bytes(model),
                "onnxruntime_fp32": fp32.stat().st_size,
                **({"onnxruntime_int8": (out / INT8_FILE).stat().st_size} if quantize else {}),
            },
        }
    )
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", report_markdown(report))
    return report


def machine_note(threads: int) -> str:
    return (
        f"CPU, {threads} intra-op thread(s) for torch and ONNX Runtime alike "
        f"(torch {torch.__version__})"
    )


def _weights_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def measure(
    loaded: LoadedRun,
    sessions: dict[str, Any],
    test: list[dict[str, Tensor]],
    names: list[str],
    threads: int,
    repeats: int,
    latency_samples: int,
) -> dict[str, Any]:
    """Accuracy and latency of torch eager fp32 and each ONNX session on the same batches."""
    model = loaded.model
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:

        def torch_eager(batch: dict[str, Tensor]) -> np.ndarray:
            with torch.inference_mode():
                return model({n: batch[n] for n in names}).numpy()

        engines = {"torch_fp32": torch_eager}
        for label, sess in sessions.items():
            engines[label] = _ort_engine(sess, names)
        timed = time_engines(engines, test, repeats)
        singles = [
            {n: b[n][i : i + 1] for n in names} for b in test for i in range(len(b[names[0]]))
        ][:latency_samples]
        single = single_sample_latency(engines, singles) if singles else {}
    finally:
        torch.set_num_threads(previous)
    labels = np.concatenate([b["label"].numpy() for b in test])
    n = len(labels)
    reference = timed["torch_fp32"]
    rows = {}
    for name, result in timed.items():
        logits = result["logits"]
        best = min(result["seconds"])
        rows[name] = {
            "accuracy": round(float((logits.argmax(-1) == labels).mean()), 6),
            "agreement_with_torch": round(
                float((logits.argmax(-1) == reference["logits"].argmax(-1)).mean()), 6
            ),
            "max_abs_diff_vs_torch": float(np.max(np.abs(logits - reference["logits"]))),
            "test_split_seconds_best": round(best, 4),
            "test_split_seconds_all": [round(s, 4) for s in result["seconds"]],
            "ms_per_sample": round(1000 * best / n, 4),
            "speedup_vs_torch": round(min(reference["seconds"]) / best, 3),
        }
        if name in single:
            rows[name]["batch1_ms_median"] = single[name]
            rows[name]["batch1_speedup_vs_torch"] = round(single["torch_fp32"] / single[name], 3)
    return {
        "test_samples": n,
        "test_batches": len(test),
        "batch_size": len(test[0][names[0]]),
        "threads": threads,
        "repeats": repeats,
        "latency_samples": len(singles),
        "engines": rows,
    }


def _ort_engine(sess: Any, names: list[str]):
    def run(batch: dict[str, Tensor]) -> np.ndarray:
        return sess.run([OUTPUT], feeds(batch, names))[0]

    return run


# ---- the export folder's manifest ---------------------------------------------------------


def write_manifest(
    loaded: LoadedRun,
    out: Path,
    names: list[str],
    example: dict[str, Tensor],
    opset: int,
    quantization: dict[str, Any] | None,
) -> dict[str, Any]:
    """``export.json``: what the runtime needs to prepare inputs and read the outputs."""
    dm = loaded.datamodule
    state = dm.preprocessing_state()
    axes = {}
    for name, dims in dynamic_axes(example, names).items():
        if name == OUTPUT:
            continue
        axes[name] = {
            "dtype": str(example[name].dtype).removeprefix("torch."),
            "shape": [dims.get(i, int(s)) for i, s in enumerate(example[name].shape)],
        }
    modalities = {m: modality_spec(loaded, m, state, out) for m in loaded.model.encoders}
    manifest = {
        "format": "onnx",
        "opset": opset,
        "task": "classify",
        "source_run": str(loaded.path),
        "classes": loaded.classes,
        "inputs": axes,
        "output": {"name": OUTPUT, "shape": ["batch", len(loaded.classes)]},
        "models": {"fp32": FP32_FILE, **({"int8": INT8_FILE} if quantization else {})},
        "quantization": quantization,
        "modalities": modalities,
        "data_class": type(dm).__name__,
    }
    atomic_write_json(out / EXPORT_FILE, manifest)
    return manifest


def modality_spec(
    loaded: LoadedRun, modality: str, state: dict[str, Any], out: Path
) -> dict[str, Any]:
    """How the runtime turns a raw input of ``modality`` into the model's tensor."""
    dm = loaded.datamodule
    if modality == "image":
        return {
            "image_size": state.get("image_size"),
            "channels": state.get("channels"),
            "mean": state["mean"],
            "std": state["std"],
            "resample": "bilinear",
        }
    if modality == "text":
        tokenizer = getattr(dm, "tokenizer", None)
        if tokenizer is None:
            raise LongmmError(f"{loaded.path}: the data module has no tokenizer to export")
        tokenizer.save(out / "tokenizer.json")
        return {
            "tokenizer": "tokenizer.json",
            "lowercase": bool(state.get("lowercase", False)),
            "redact_pii": bool(state.get("redact_pii", False)),
            "max_length": int(state["max_length"]),
            "pad_id": int(tokenizer.pad_id),
            "special_tokens_added": int(tokenizer.special_tokens_added),
        }
    if modality == "audio":
        logmel = dm.logmel
        np.save(out / MEL_FILE, logmel.mel_fb.cpu().numpy().astype(np.float32))
        return {
            "sample_rate": int(logmel.sample_rate),
            "max_seconds": float(state["max_seconds"]),
            "n_fft": int(logmel.n_fft),
            "hop_length": int(logmel.hop_length),
            "n_mels": int(logmel.n_mels),
            "log_offset": float(logmel.log_offset),
            "mel_filterbank": MEL_FILE,
            "feature_mean": state["feature_mean"],
            "feature_std": state["feature_std"],
        }
    raise LongmmError(f"modality {modality!r}: no runtime preprocessing to export")


# ---- report -------------------------------------------------------------------------------


def report_markdown(report: dict[str, Any]) -> str:
    files = report["files"]
    sliced = report["parity"].get("single_sample_slice")
    parity_slice = ", and a 1-sample slice of the first batch" if sliced else ""
    lines = [
        f"# Export of {report['run']}",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {report['machine']}. Test split: {report['test_samples']} samples in "
        f"{report['test_batches']} batches of {report['batch_size']}; best of "
        f"{report['repeats']} interleaved passes; batch-1 latency is the median over "
        f"{report['latency_samples']} samples.",
        "",
        f"Parity (fp32): max |ONNX Runtime - torch| = {report['parity']['max_abs_diff']:.2e} "
        f"(tolerance {report['parity']['tolerance']:g}) over the "
        f"{report['parity']['samples']} test samples"
        f"{parity_slice}.",
        "",
        "| engine | file bytes | test accuracy | agrees with torch | ms/sample (batched) | "
        "speedup | batch-1 ms | batch-1 speedup |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    sizes = {"torch_fp32": files["torch_fp32_weights"], **files}
    for name, row in report["engines"].items():
        lines.append(
            f"| {name} | {sizes.get(name, '')} | {row['accuracy']:.4f} | "
            f"{row['agreement_with_torch']:.4f} | {row['ms_per_sample']:.4f} | "
            f"{row['speedup_vs_torch']:.2f}x | {row.get('batch1_ms_median', '')} | "
            f"{row.get('batch1_speedup_vs_torch', '')} |"
        )
    if report.get("quantization"):
        q = report["quantization"]
        lines += [
            "",
            f"int8: {q['method']} quantization; weights {q['weights']}, activations "
            f"{q['activations']}; quantization ops: "
            + ", ".join(f"{op} x{n}" for op, n in q["quantization_ops"].items())
            + ".",
        ]
    lines += ["", "torch_fp32 bytes: the state dict's tensors (fp32)."]
    return "\n".join(lines) + "\n"


def summary_text(report: dict[str, Any], out: Path) -> str:
    rows = [
        f"  {name:<18} accuracy {row['accuracy']:.4f}  {row['ms_per_sample']:.4f} ms/sample  "
        f"{row['speedup_vs_torch']:.2f}x vs torch"
        for name, row in report["engines"].items()
    ]
    return "\n".join([f"export folder: {out}", *rows, f"report: {out / 'report.md'}"])

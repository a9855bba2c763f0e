"""``longmm compress``: pruning and knowledge distillation of a classifier run, fine-tuned by
Lightning's Trainer on the run's own data module.

    longmm compress runs/m --prune 0.5 --out runs/m_pruned
    longmm compress runs/m_student --distill-from runs/m --prune 0.5 --out runs/m_student_kd

``RUN_DIR`` is the model to compress. With ``--distill-from`` it is the student: a smaller
model trained on the same data (its own recipe, e.g. ``recipes/cnn_mnist_student.yaml``),
fine-tuned here on the teacher's softened outputs (Hinton et al.: KL at temperature ``T``,
scaled by ``T**2``, mixed with the hard-label loss). ``--prune`` removes that share of the
weights with ``torch.nn.utils.prune``: the smallest by magnitude across all convolution,
linear and recurrent weights (global), or with ``--structured`` the output channels/rows of
smallest L2 norm in every convolution and linear layer but the classifier's output; the
masks stay on during fine-tuning and are made permanent at the end.

The output folder is a run folder (config, checkpoints, data.json, tokenizer), so
``longmm export`` and ``longmm serve`` take it, plus ``compress.json`` / ``compress.md``:
parameters (all and non-zero), weight-file bytes raw and gzip-compressed (where zeros from
pruning pay off), torch eager latency on the test split, and test accuracy of the teacher,
the model before and after.
"""

from __future__ import annotations

import copy
import gzip
import json
import math
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import Tensor, nn
from torch.nn.utils import prune
from torchmetrics.classification import MulticlassAccuracy

from longmm.deploy.loading import LoadedRun, load_run, model_inputs, prepared_batches
from longmm.errors import LongmmError
from longmm.io import atomic_path, atomic_write_json, atomic_write_text
from longmm.runs import read_checkpoint, save_weights
from longmm.training.optim import build_optimizer, build_scheduler, param_groups

_RNN = (nn.LSTM, nn.GRU, nn.RNN)
_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)


class Distill(L.LightningModule):
    """Fine-tunes ``student`` on hard labels and, with a ``teacher``, on its soft targets:
    ``alpha * T**2 * KL(student_T || teacher_T) + (1 - alpha) * CE(student, label)``."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        temperature: float = 4.0,
        alpha: float = 0.7,
        lr: float = 5e-4,
        weight_decay: float = 0.01,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if temperature <= 0 or not 0.0 <= alpha <= 1.0:
            raise LongmmError(
                f"need temperature > 0 and 0 <= alpha <= 1, got {temperature}, {alpha}"
            )
        self.student = student
        self.teacher = teacher
        if teacher is not None:
            teacher.requires_grad_(False)
        self.temperature = temperature
        self.alpha = alpha if teacher is not None else 0.0
        self.lr = lr
        self.weight_decay = weight_decay
        self.label_smoothing = label_smoothing
        num_classes = int(student.num_classes)
        self.val_accuracy = MulticlassAccuracy(num_classes=num_classes, average="micro")

    def train(self, mode: bool = True) -> Distill:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # the teacher's batch norm and dropout stay as trained
        return self

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        logits = self.student(batch)
        loss = F.cross_entropy(logits, batch["label"], label_smoothing=self.label_smoothing)
        if self.teacher is not None:
            with torch.no_grad():
                target = F.softmax(self.teacher(batch) / self.temperature, dim=-1)
            soft = F.kl_div(
                F.log_softmax(logits / self.temperature, dim=-1), target, reduction="batchmean"
            )
            loss = self.alpha * self.temperature**2 * soft + (1 - self.alpha) * loss
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(logits))
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.val_accuracy(self.student(batch).argmax(-1), batch["label"])
        self.log("val/accuracy", self.val_accuracy, on_epoch=True, prog_bar=True)

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(param_groups(self.student, self.weight_decay), "adamw", self.lr)
        total = int(self.trainer.estimated_stepping_batches)
        epochs = max(self.trainer.max_epochs or 1, 1)
        scheduler = build_scheduler(
            optimizer, "cosine", total_steps=total, steps_per_epoch=max(total // epochs, 1)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


# ---- pruning ------------------------------------------------------------------------------


def prune_targets(model: nn.Module, structured: bool) -> list[tuple[nn.Module, str]]:
    """(module, parameter name) pairs to prune. Structured pruning skips recurrent layers
    (their gates interleave rows) and the last linear layer (its rows are the classes)."""
    targets: list[tuple[nn.Module, str]] = []
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    output = linears[-1] if linears else None
    for module in model.modules():
        if isinstance(module, _LAYERS):
            if structured and module is output:
                continue
            targets.append((module, "weight"))
        elif isinstance(module, _RNN) and not structured:
            targets += [(module, n) for n, _ in module.named_parameters() if n.startswith("weight")]
    if not targets:
        raise LongmmError("the model has no convolution, linear or recurrent weights to prune")
    return targets


def apply_pruning(model: nn.Module, amount: float, structured: bool) -> list[tuple[nn.Module, str]]:
    """Attach pruning masks (``<name>_orig`` + ``<name>_mask``); returns what was pruned."""
    if not 0.0 < amount < 1.0:
        raise LongmmError(f"--prune must be in (0, 1), got {amount}")
    targets = prune_targets(model, structured)
    if structured:
        for module, name in targets:
            prune.ln_structured(module, name, amount=amount, n=2, dim=0)
    else:
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=amount)
    return targets


def make_permanent(targets: list[tuple[nn.Module, str]]) -> None:
    for module, name in targets:
        if prune.is_pruned(module):
            prune.remove(module, name)
    for module in {id(m): m for m, _ in targets}.values():
        if isinstance(module, _RNN):
            module.flatten_parameters()


# ---- measuring ----------------------------------------------------------------------------


def size_of(model: nn.Module) -> dict[str, int]:
    """Parameter counts and the bytes of the fp32 weight file, raw and gzip-compressed."""
    from safetensors.torch import save

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    raw = save(state)
    params = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    return {
        "parameters": params,
        "nonzero_parameters": nonzero,
        "weights_bytes": len(raw),
        "weights_gzip_bytes": len(gzip.compress(raw, compresslevel=6)),
    }


def evaluate(
    models: dict[str, nn.Module], batches: list[dict[str, Tensor]], repeats: int = 3
) -> dict[str, dict[str, float]]:
    """Test accuracy and best-of-``repeats`` torch eager time per sample, interleaved."""
    names = model_inputs(next(iter(models.values())), batches[0])
    labels = torch.cat([b["label"] for b in batches])
    seconds: dict[str, list[float]] = {k: [] for k in models}
    correct: dict[str, int] = {}
    with torch.inference_mode():
        for rep in range(repeats):
            for key, model in models.items():
                model.eval()
                t0 = time.perf_counter()
                preds = [model({n: b[n] for n in names}).argmax(-1) for b in batches]
                seconds[key].append(time.perf_counter() - t0)
                if rep == 0:
                    correct[key] = int((torch.cat(preds) == labels).sum())
    n = len(labels)
    return {
        key: {
            "accuracy": round(correct[key] / n, 6),
            "ms_per_sample": round(1000 * min(seconds[key]) / n, 4),
        }
        for key in models
    }


def check_same_data(student: LoadedRun, teacher: LoadedRun) -> None:
    """The teacher must see the student's batches as its own: same classes, same prepared
    inputs (normalization statistics, tokenizer)."""
    if student.classes != teacher.classes:
        raise LongmmError(
            f"--distill-from {teacher.path}: classes {teacher.classes} differ from "
            f"{student.path}'s {student.classes}"
        )
    ours = read_checkpoint(student.checkpoint).get(type(student.datamodule).__qualname__) or {}
    theirs = read_checkpoint(teacher.checkpoint).get(type(student.datamodule).__qualname__)
    if theirs is None:
        raise LongmmError(
            f"--distill-from {teacher.path}: trained on {type(teacher.datamodule).__name__}, "
            f"not {type(student.datamodule).__name__}"
        )
    a, b = (
        json.loads(ours.get("preprocessing", "{}")),
        json.loads(theirs.get("preprocessing", "{}")),
    )
    # Keys only one run has are fields added to longmm since the older run was trained.
    differ = sorted(k for k in set(a) & set(b) if not _same(a[k], b[k]))
    if ours.get("tokenizer") != theirs.get("tokenizer"):
        differ.append("tokenizer")
    if differ:
        raise LongmmError(
            f"--distill-from {teacher.path}: its inputs are prepared differently from "
            f"{student.path}'s ({', '.join(differ)} differ); train both on the same data"
        )


def _same(x: Any, y: Any) -> bool:
    """Equal, with statistics equal to float32 rounding (``[0.13251167]`` twice)."""
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(_same(u, v) for u, v in zip(x, y, strict=True))
    if isinstance(x, float) or isinstance(y, float):
        return (
            isinstance(x, int | float)
            and isinstance(y, int | float)
            and math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-7)
        )
    return x == y


def comparison(
    ref_size: dict[str, int], ref_row: dict[str, Any], size: dict[str, int], row: dict[str, Any]
) -> dict[str, float]:
    """The compressed model next to the reference: size ratios, accuracy drop, speed-up."""
    return {
        "parameters_ratio": round(ref_size["parameters"] / size["parameters"], 3),
        "nonzero_parameters_ratio": round(
            ref_size["nonzero_parameters"] / max(size["nonzero_parameters"], 1), 3
        ),
        "weights_gzip_ratio": round(ref_size["weights_gzip_bytes"] / size["weights_gzip_bytes"], 3),
        "accuracy_drop_points": round(100 * (ref_row["accuracy"] - row["accuracy"]), 3),
        "speedup": round(ref_row["ms_per_sample"] / row["ms_per_sample"], 3),
    }


def compress_run(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    prune_amount: float | None = None,
    structured: bool = False,
    teacher_run: str | Path | None = None,
    epochs: int = 3,
    lr: float = 5e-4,
    temperature: float = 4.0,
    alpha: float = 0.7,
    data_root: str | None = None,
    threads: int = 1,
    limit_train_batches: int | None = None,
    seed: int = 0,
    command: str = "",
) -> dict[str, Any]:
    L.seed_everything(seed, verbose=False)
    student = load_run(run_dir, data_root=data_root)
    out = Path(out_dir)
    if out.resolve() in (student.path.resolve(), Path(teacher_run or student.path).resolve()):
        raise LongmmError(f"--out {out}: choose a new folder, not an input run")
    teacher = None
    if teacher_run is not None:
        teacher = load_run(teacher_run, data_root=data_root, setup=False)
        check_same_data(student, teacher)
    test = list(prepared_batches(student.datamodule, "test"))
    model = student.model
    original = copy.deepcopy(model)  # measured beside the result, in the same passes

    targets = apply_pruning(model, prune_amount, structured) if prune_amount else []
    wrapper = Distill(
        model,
        teacher.model if teacher else None,
        temperature=temperature,
        alpha=alpha,
        lr=lr,
        label_smoothing=float(getattr(model, "label_smoothing", 0.0)),
    )
    best = fine_tune(wrapper, student.datamodule, out, epochs, limit_train_batches)
    make_permanent(targets)
    model.eval()
    models = {**({"teacher": teacher.model} if teacher else {}), "original": original}
    models["compressed"] = model
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rows = evaluate(models, test)
    finally:
        torch.set_num_threads(previous)
    sizes = {k: size_of(m) for k, m in models.items()}
    after = rows["compressed"]
    write_run_folder(student, model, out, after)

    reference = "teacher" if teacher else "original"
    ref_size, ref_row = sizes[reference], rows[reference]
    report = {
        "run": str(student.path),
        "teacher": str(teacher.path) if teacher else None,
        "command": command,
        "machine": f"CPU, {threads} torch thread(s), torch {torch.__version__}",
        "prune": {"amount": prune_amount, "structured": structured} if prune_amount else None,
        "distillation": {"temperature": temperature, "alpha": alpha} if teacher else None,
        "fine_tune": {"epochs": epochs, "lr": lr, "seed": seed, "best_val_accuracy": best},
        "test_samples": sum(len(b["label"]) for b in test),
        "reference": reference,
        "models": {k: {**rows[k], **sizes[k]} for k in rows},
        "compressed_vs_reference": comparison(ref_size, ref_row, sizes["compressed"], after),
    }
    atomic_write_json(out / "compress.json", report)
    atomic_write_text(out / "compress.md", report_markdown(report))
    return report


def fine_tune(
    wrapper: Distill, datamodule: Any, out: Path, epochs: int, limit_train_batches: int | None
) -> float | None:
    """Lightning fit of ``wrapper``; the best epoch (validation accuracy) is restored."""
    checkpoint = ModelCheckpoint(
        dirpath=out / "finetune",
        filename="best",
        monitor="val/accuracy",
        mode="max",
        save_top_k=1,
        save_weights_only=True,
        enable_version_counter=False,
    )
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=CSVLogger(save_dir=str(out), name="logs"),
        callbacks=[checkpoint],
        default_root_dir=str(out),
        limit_train_batches=limit_train_batches,
        enable_model_summary=False,
        log_every_n_steps=10,
    )
    wrapper.train()  # a loaded run is in eval mode; Lightning keeps the mode it is given
    with warnings.catch_warnings():
        # The teacher's modules stay in eval mode on purpose.
        warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode")
        trainer.fit(wrapper, datamodule=datamodule)
    if checkpoint.best_model_path:
        state = read_checkpoint(checkpoint.best_model_path)["state_dict"]
        wrapper.load_state_dict(state)
        shutil.rmtree(out / "finetune", ignore_errors=True)
    score = checkpoint.best_model_score
    return round(float(score), 6) if score is not None else None


def write_run_folder(
    source: LoadedRun, model: nn.Module, out: Path, test: dict[str, float]
) -> None:
    """``out`` as a run folder of the compressed model: the source checkpoint's recipe and
    data state with the new weights, config, data.json, tokenizer, metrics."""
    ckpt = read_checkpoint(source.checkpoint)
    kept = {
        k: v
        for k, v in ckpt.items()
        if k not in ("optimizer_states", "lr_schedulers", "loops", "callbacks")
    }
    kept["state_dict"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    folder = out / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "best.ckpt") as tmp:
        torch.save(kept, tmp)
    save_weights(kept["state_dict"], folder / "best.safetensors", {"source_run": str(source.path)})
    for name in ("config.yaml", "data.json", "tokenizer.json"):
        if (source.path / name).is_file():
            shutil.copyfile(source.path / name, out / name)
    atomic_write_json(out / "metrics.json", {"test": test, "compressed_from": str(source.path)})


def report_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Compression of {report['run']}",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {report['machine']}. Test split: {report['test_samples']} samples; "
        f"latency is torch eager, best of 3 interleaved passes.",
        "",
        "| model | test accuracy | parameters | non-zero | weights bytes | gzip bytes | "
        "ms/sample |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in report["models"].items():
        lines.append(
            f"| {name} | {row['accuracy']:.4f} | {row['parameters']} | "
            f"{row['nonzero_parameters']} | {row['weights_bytes']} | "
            f"{row['weights_gzip_bytes']} | {row['ms_per_sample']:.4f} |"
        )
    c = report["compressed_vs_reference"]
    lines += [
        "",
        f"Against the {report['reference']}: {c['parameters_ratio']}x fewer parameters, "
        f"{c['nonzero_parameters_ratio']}x fewer non-zero parameters, "
        f"{c['weights_gzip_ratio']}x smaller gzip-compressed weights, "
        f"{c['accuracy_drop_points']} points of accuracy lost, {c['speedup']}x the speed.",
    ]
    if report["prune"]:
        lines += [
            "",
            "Pruned weights are zeros in dense tensors: they shrink the compressed file, not "
            "dense compute time.",
        ]
    return "\n".join(lines) + "\n"


def summary_text(report: dict[str, Any], out: Path) -> str:
    rows = [
        f"  {name:<11} accuracy {row['accuracy']:.4f}  params {row['parameters']:>9}  "
        f"non-zero {row['nonzero_parameters']:>9}  {row['ms_per_sample']:.4f} ms/sample"
        for name, row in report["models"].items()
    ]
    return "\n".join([f"compressed run folder: {out}", *rows, f"report: {out / 'compress.md'}"])

"""``longmm fit | validate | test | predict``: LightningCLI (YAML recipes, ``--section.key value``
overrides) with a run folder: config, checkpoints, metrics, report, plots, predictions.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from longmm.errors import LongmmError
from longmm.evaluation.plots import plot_confusion_matrix, plot_curves
from longmm.evaluation.report import run_report
from longmm.io import atomic_write_json, atomic_write_text
from longmm.runs import AtomicCheckpointIO, export_best_weights, read_checkpoint
from longmm.training.callbacks import EpochReseed, LastCheckpoint


class LongmmCLI(LightningCLI):
    """LightningCLI that owns the run folder: config, checkpoints, metrics, report, plots."""

    def init_parser(self, **kwargs: Any) -> Any:
        parser = super().init_parser(**kwargs)
        # A wrong option is reported under a one-line usage, not the ~45 lines of every
        # Trainer option (the error ends with the tip to run --help, which lists them all).
        parser.format_usage = lambda: f"usage: {parser.prog} [options]\n"
        return parser

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_argument(
            "--out", type=str | None, default=None, help="Run folder (default: runs/<recipe>)."
        )
        parser.link_arguments(
            "data.num_classes", "model.init_args.num_classes", apply_on="instantiate"
        )

    # -- run folder ----------------------------------------------------------------------------
    def _sub(self) -> Any:
        return self.config[self.subcommand]

    def run_dir(self) -> Path:
        return Path(self._out)

    def _parse_ckpt_path(self) -> None:
        sub = self.config.get("subcommand")
        ckpt_path = self.config[sub].get("ckpt_path") if sub else None
        if (
            ckpt_path
            and ckpt_path not in ("last", "best", "hpc", "registry")
            and not Path(ckpt_path).is_file()
        ):
            raise LongmmError(f"{ckpt_path}: checkpoint not found")
        if ckpt_path and Path(ckpt_path).is_file():
            read_checkpoint(ckpt_path)  # a clear error for a truncated or corrupt file
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        sub = self._sub()
        configs = sub.get("config") or []
        stem = Path(str(configs[0])).stem if configs else "run"
        self._out = sub.get("out") or str(Path("runs") / stem)
        sub.trainer.default_root_dir = self._out

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        run = self.run_dir()
        callbacks = [
            self._get(self.config_init, c) for c in self._parser(self.subcommand).callback_keys
        ]
        config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        config["callbacks"] = list(config.get("callbacks") or [])
        config["plugins"] = [*(config.get("plugins") or []), AtomicCheckpointIO()]
        if self.subcommand == "fit":
            monitor, mode = self.model.monitor, self.model.monitor_mode
            self.checkpoint_callback = ModelCheckpoint(
                dirpath=run / "checkpoints",
                filename="best",
                monitor=monitor,
                mode=mode,
                save_top_k=1,
                enable_version_counter=False,
                auto_insert_metric_name=False,
            )
            last = LastCheckpoint(run / "checkpoints")
            config["callbacks"] += [self.checkpoint_callback, last, EpochReseed()]
            if config.get("logger") in (None, True):
                if not self._sub().get("ckpt_path") and rank_zero_only.rank == 0:
                    shutil.rmtree(run / "logs", ignore_errors=True)  # a fresh fit starts fresh logs
                # One version folder per attempt; a resumed run adds one, the curves merge them.
                config["logger"] = CSVLogger(save_dir=str(run), name="logs")
        else:
            config["logger"] = False
        return self._instantiate_trainer(config, callbacks)

    def _write_config(self) -> None:
        if self.trainer.is_global_zero:
            text = self._parser(self.subcommand).dump(self._sub(), skip_none=False)
            atomic_write_text(self.run_dir() / "config.yaml", text)

    # -- fit -----------------------------------------------------------------------------------
    def before_fit(self) -> None:
        self._write_config()
        self._t0 = time.perf_counter()

    def after_fit(self) -> None:
        seconds = time.perf_counter() - self._t0
        run = self.run_dir()
        trainer, model, dm = self.trainer, self.model, self.datamodule
        plots: list[str] = []
        logs = sorted(
            (run / "logs").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name[8:])
        )
        if trainer.is_global_zero and logs and plot_curves(logs, run / "plots" / "curves.png"):
            plots.append("plots/curves.png")
        cb = self.checkpoint_callback
        best = cb.best_model_path or cb.last_model_path
        if trainer.interrupted or not best:
            return
        results: dict[str, Any] = {}
        evaluator = trainer
        if trainer.world_size > 1:
            # Distributed samplers pad the evaluation splits (repeated samples, so that every
            # rank gets as many): the final evaluation runs on rank 0 alone, each sample once.
            from longmm.training.distributed import leave_process_group, single_device_trainer

            leave_process_group()
            if not trainer.is_global_zero:
                return
            evaluator = single_device_trainer(trainer, [AtomicCheckpointIO()])
        for stage, fn in (("val", evaluator.validate), ("test", evaluator.test)):
            fn(model, datamodule=dm, ckpt_path=best, verbose=False)
            results[stage] = dict(model.eval_results.get(stage, {}))
        if not trainer.is_global_zero:
            return
        export_best_weights(best, run / "checkpoints" / "best.safetensors")
        metrics = {
            "test": results["test"],
            "val": results["val"],
            "seconds": round(seconds, 2),
            "epochs": trainer.current_epoch,
            "best_checkpoint": _relative(Path(best), run),
            "monitor": {"name": cb.monitor, "best": float(cb.best_model_score or float("nan"))},
        }
        dm.save_artifacts(run)
        data_summary = dm.summary()
        classes = dm.classes
        if "confusion_matrix" in results["test"] and classes:
            plot_confusion_matrix(
                results["test"]["confusion_matrix"], classes, run / "plots" / "confusion_matrix.png"
            )
            plots.append("plots/confusion_matrix.png")
        plots += model.write_artifacts(run)
        atomic_write_json(run / "metrics.json", metrics)
        command = "longmm " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        title = f"Run {run.name}: {type(model).__name__}"
        atomic_write_text(
            run / "report.md", run_report(title, metrics, data_summary, command, plots)
        )
        test = metrics["test"]
        headline = [k for k in ("accuracy", "f1_macro", "balanced_accuracy") if k in test]
        # Tasks without accuracy (a GAN, a translator) show their own scalar metrics.
        keys = headline or [k for k, v in test.items() if isinstance(v, float)]
        summary = {k: test[k] for k in keys}
        print(f"\nrun folder: {run}\ntest: {json.dumps(summary)}\ntrained in {seconds:.1f} s")

    # -- validate / test / predict -----------------------------------------------------------
    def _after_eval(self, stage: str) -> None:
        if self.trainer.is_global_zero:
            results = self.model.eval_results.get(stage)
            if results:
                atomic_write_json(self.run_dir() / f"metrics_{stage}.json", results)

    def predict(self, **kwargs: Any) -> None:
        """Predict the data module's predict split; write ``predictions.jsonl`` in input order."""
        batches = self.trainer.predict(**kwargs) or []
        rows = self._prediction_rows(batches)
        out = self.run_dir() / "predictions.jsonl"
        if self.trainer.world_size > 1:
            # Each rank writes a shard; rank 0 merges them in input order.
            from longmm.training.distributed import gather_predictions

            written = gather_predictions(rows, out, self.trainer)
        else:
            text = "".join(json.dumps(r) + "\n" for r in sorted(rows, key=lambda r: r["index"]))
            atomic_write_text(out, text)
            written = len(rows)
        if self.trainer.is_global_zero:
            print(f"wrote {written} predictions to {out}")

    def _prediction_rows(self, batches: list[dict[str, Any]]) -> list[dict[str, Any]]:
        dm = self.datamodule
        classes = list(dm.classes or [])
        samples = dm.samples.get("test", [])
        rows = []
        for batch in batches:
            for i in range(len(batch["pred"])):
                index = int(batch["index"][i]) if "index" in batch else len(rows)
                pred = int(batch["pred"][i])
                row: dict[str, Any] = {"index": index}
                if index < len(samples):
                    row["where"] = samples[index].where
                row["pred"] = classes[pred] if pred < len(classes) else pred
                row["prob"] = round(float(batch["prob"][i]), 6)
                if "label" in batch:
                    label = int(batch["label"][i])
                    row["label"] = classes[label] if label < len(classes) else label
                rows.append(row)
        return rows

    def after_validate(self) -> None:
        self._after_eval("val")

    def after_test(self) -> None:
        self._after_eval("test")


def _relative(path: Path, root: Path) -> str:
    path, root = path.resolve(), root.resolve()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _quiet_known_warnings() -> None:
    """Silence warnings that say nothing to a longmm user."""
    for message in (
        "LightningCLI's args parameter",  # main() always passes argv explicitly
        ".*does not have many workers",  # in-memory tensors need no loader workers
        ".*isinstance.treespec, LeafSpec.",  # a Lightning internal deprecation
        ".*The number of training batches .* is smaller than the logging interval",
        # test/validate/predict rebuild the recipe's callbacks, and evaluation restores none
        ".*callbacks used to create the checkpoint need to be provided",
    ):
        warnings.filterwarnings("ignore", message=message)


def run_lightning(args: list[str]) -> LongmmCLI:
    from longmm.data import SourceDataModule
    from longmm.tasks import Task

    _quiet_known_warnings()

    return LongmmCLI(
        Task,
        SourceDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=None,
        seed_everything_default=0,
        trainer_defaults={"max_epochs": 10, "log_every_n_steps": 10},
        args=args,
        auto_configure_optimizers=False,
    )


def fit(args: list[str]) -> None:
    run_lightning(["fit", *args])


def validate(args: list[str]) -> None:
    run_lightning(["validate", *args])


def test(args: list[str]) -> None:
    run_lightning(["test", *args])

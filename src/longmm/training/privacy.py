"""Differentially private training (DP-SGD) with Opacus, as a Lightning callback.

Add it to a recipe's ``trainer.callbacks``::

    trainer:
      callbacks:
        - class_path: longmm.training.privacy.DPSGD
          init_args: {noise_multiplier: 1.0, max_grad_norm: 1.0, delta: 1.0e-5}

What it does, in Lightning's order:

1. ``setup`` (before the optimizer exists, on every stage, so checkpoints load into the same
   layers): Opacus's fixers replace the layers DP-SGD cannot use (batch norm mixes samples,
   so it becomes group norm; multi-head attention becomes Opacus's), and in-place
   activations become out-of-place (per-sample gradient hooks cannot see through them).
   With ``poisson_sampling`` the training loader is swapped for Opacus's ``DPDataLoader``.
2. ``on_train_start`` (after the optimizer and the loader exist): Opacus's
   ``GradSampleModule`` hooks compute per-sample gradients, and the task's optimizer is
   wrapped in a ``DPOptimizer`` that clips each sample's gradient to ``max_grad_norm``, adds
   Gaussian noise of ``noise_multiplier * max_grad_norm`` and then steps the task's own
   optimizer (SGD, Adam, AdamW; its schedule is unchanged). With ``target_epsilon`` the noise
   multiplier is instead solved for so that ``max_epochs`` epochs spend that budget.
3. Every optimizer step is recorded by an RDP accountant; ``train/epsilon`` is logged at each
   epoch's end, and ``eval_results["test"]["privacy"]`` (so ``metrics.json``) holds
   ``epsilon``, ``delta``, the noise multiplier, sampling rate, steps and sampling mode, and
   under ``checkpoint`` the steps and epsilon of the evaluated checkpoint alone.

Sampling: the RDP analysis assumes Poisson sampling (each sample joins each batch
independently with rate ``1 / batches per epoch``; batch sizes vary). That is the default.
``poisson_sampling: false`` keeps the data module's shuffled fixed-size batches; the same
epsilon is then the customary approximation, not a proof.

The epsilon is that of the whole training run, which bounds that of every checkpoint it
wrote (the best one included). Single process only; no gradient accumulation or clipping by
Lightning (DP-SGD clips per sample). The noise comes from torch's global RNG, reseeded per
epoch: reproducible, and not Opacus's ``secure_mode``. The accountant's history is saved in
checkpoints, so a resumed run reports the epsilon of all its steps.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import lightning as L
from torch import nn
from torch.utils.data import DataLoader

from longmm.errors import LongmmError


class DPSGD(L.Callback):
    """DP-SGD for any task trained with one optimizer and automatic optimization."""

    def __init__(
        self,
        noise_multiplier: float = 1.0,
        max_grad_norm: float = 1.0,
        delta: float = 1e-5,
        target_epsilon: float | None = None,
        poisson_sampling: bool = True,
        accountant: str = "rdp",
    ) -> None:
        if noise_multiplier < 0 or max_grad_norm <= 0:
            raise ValueError(
                f"need noise_multiplier >= 0 and max_grad_norm > 0, got {noise_multiplier}, "
                f"{max_grad_norm}"
            )
        if not 0 < delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {delta}")
        if target_epsilon is not None and target_epsilon <= 0:
            raise ValueError(f"target_epsilon must be > 0, got {target_epsilon}")
        if accountant not in ("rdp", "prv", "gdp"):
            raise ValueError(f"accountant must be 'rdp', 'prv' or 'gdp', got {accountant!r}")
        self.noise_multiplier = float(noise_multiplier)
        self.max_grad_norm = float(max_grad_norm)
        self.delta = float(delta)
        self.target_epsilon = target_epsilon
        self.poisson_sampling = poisson_sampling
        self.accountant_name = accountant
        self.accountant = _make_accountant(accountant)
        self.sample_rate: float | None = None
        self.replaced: list[str] = []
        self._grad_sample_module: Any = None
        self._checkpoint_state: dict[str, Any] | None = None

    # -- model -------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.replaced += make_dp_compatible(pl_module)
        if stage != "fit":
            return
        if trainer.world_size > 1:
            raise LongmmError("DPSGD: runs in a single process (no DDP)")
        if trainer.accumulate_grad_batches != 1:
            raise LongmmError("DPSGD: accumulate_grad_batches must be 1")
        if trainer.gradient_clip_val:
            raise LongmmError(
                "DPSGD: remove trainer.gradient_clip_val; DP-SGD clips each sample's gradient "
                "to max_grad_norm"
            )
        if not pl_module.automatic_optimization:
            raise LongmmError(f"DPSGD: {type(pl_module).__name__} steps its own optimizers")
        own = [n for n, p in pl_module.named_parameters(recurse=False) if p.requires_grad]
        if own:
            raise LongmmError(
                f"DPSGD: {type(pl_module).__name__} has trainable parameters of its own {own}; "
                f"Opacus computes per-sample gradients of layers (nn.Linear, nn.Conv2d, ...) "
                f"only"
            )
        if self.poisson_sampling:
            _use_poisson_loader(trainer, pl_module)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer

        # The first layer's input needs no gradient; Opacus's hooks only want its output's.
        warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients")
        if len(trainer.optimizers) != 1:
            raise LongmmError(f"DPSGD: needs exactly one optimizer, got {len(trainer.optimizers)}")
        loader = trainer.train_dataloader
        loader = getattr(loader, "iterables", loader)  # inside Lightning's CombinedLoader
        length = _loader_length(loader)
        if not length:
            raise LongmmError("DPSGD: the training loader needs a length")
        # Each batch samples at 1 / (the loader's batches per epoch), also when Lightning
        # stops an epoch early (limit_train_batches): fewer steps, same rate.
        self.sample_rate = float(getattr(loader, "sample_rate", 1.0 / length))
        dataset_size = _dataset_size(loader)
        if self._checkpoint_state is not None and not self.accountant.history:
            self._adopt(self._checkpoint_state)  # a resumed fit goes on counting
        if self.target_epsilon is not None and not self.accountant.history:
            # Solved once for the whole run; a resumed run keeps the saved multiplier.
            self.noise_multiplier = self._solve_noise(trainer)
        expected = max(int(round(dataset_size * self.sample_rate)), 1) if dataset_size else None
        if self._grad_sample_module is None:
            try:
                self._grad_sample_module = GradSampleModule(
                    pl_module, batch_first=True, loss_reduction="mean", strict=True
                )
            except NotImplementedError as err:
                raise LongmmError(
                    f"DPSGD: Opacus cannot compute per-sample gradients of "
                    f"{type(pl_module).__name__}: {err}"
                ) from err
        optimizer = trainer.optimizers[0]
        while isinstance(optimizer, DPOptimizer):  # a second fit on the same trainer
            optimizer = optimizer.original_optimizer
        dp = DPOptimizer(
            optimizer,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm,
            expected_batch_size=expected,
            loss_reduction="mean",
        )
        dp.attach_step_hook(self.accountant.get_optimizer_hook_fn(sample_rate=self.sample_rate))
        trainer.strategy.optimizers = [dp]

    def _solve_noise(self, trainer: L.Trainer) -> float:
        from opacus.accountants.utils import get_noise_multiplier

        assert self.sample_rate is not None and self.target_epsilon is not None
        steps = int(trainer.max_epochs or 1) * int(trainer.num_training_batches)
        if trainer.max_steps and trainer.max_steps > 0:
            steps = min(steps, trainer.max_steps)
        return float(
            get_noise_multiplier(
                target_epsilon=self.target_epsilon,
                target_delta=self.delta,
                sample_rate=self.sample_rate,
                steps=steps,
                accountant=self.accountant_name,
            )
        )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._grad_sample_module is not None:
            self._grad_sample_module.remove_hooks()
            self._grad_sample_module = None
        for p in pl_module.parameters():
            for attr in ("grad_sample", "summed_grad", "_forward_counter"):
                if hasattr(p, attr):
                    delattr(p, attr)

    # -- accounting --------------------------------------------------------------------------
    @property
    def steps(self) -> int:
        return _steps(self.accountant.history)

    def epsilon(self) -> float:
        """Epsilon spent so far at ``delta`` (0 before any step)."""
        return _epsilon(self.accountant_name, self.accountant.history, self.delta)

    def report(self) -> dict[str, Any]:
        out = {
            "epsilon": round(self.epsilon(), 6),
            "delta": self.delta,
            "noise_multiplier": round(self.noise_multiplier, 6),
            "max_grad_norm": self.max_grad_norm,
            "sample_rate": round(self.sample_rate, 8) if self.sample_rate else None,
            "steps": self.steps,
            "sampling": "poisson" if self.poisson_sampling else "shuffle",
            "accountant": self.accountant_name,
            "target_epsilon": self.target_epsilon,
            "replaced_layers": sorted(set(self.replaced)),
        }
        if self._checkpoint_state is not None:
            history = _history(self._checkpoint_state)
            out["checkpoint"] = {
                "steps": _steps(history),
                "epsilon": round(_epsilon(self.accountant_name, history, self.delta), 6),
            }
        return out

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.log("train/epsilon", self.epsilon())

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.accountant.history:
            # A test of a saved run, not trained in this process: the whole run's steps are
            # in its last checkpoint; else, those of the tested one.
            state = _last_checkpoint_state(trainer.ckpt_path, self.state_key)
            state = state or self._checkpoint_state
            if state:
                self._adopt(state)
        results = getattr(pl_module, "eval_results", None)
        if isinstance(results, dict) and self.accountant.history:
            results.setdefault("test", {})["privacy"] = self.report()

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": [list(h) for h in self.accountant.history],
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning restores callbacks whenever it loads a checkpoint, for a test too. The
        # accountant takes the saved history only when a fit resumes (on_train_start): the
        # epsilon of a run is that of all its steps, whichever checkpoint is then evaluated
        # (choosing the best by validation looks at every checkpoint). The loaded state is
        # reported as ``checkpoint``.
        self._checkpoint_state = dict(state_dict)

    def _adopt(self, state: dict[str, Any]) -> None:
        self.accountant.history = _history(state)
        self.noise_multiplier = float(state.get("noise_multiplier", self.noise_multiplier))
        self.sample_rate = state.get("sample_rate", self.sample_rate)


def _history(state: dict[str, Any]) -> list[tuple]:
    return [tuple(h) for h in state.get("history", [])]


def _steps(history: list[tuple]) -> int:
    return int(sum(n for _, _, n in history))


def _epsilon(accountant: str, history: list[tuple], delta: float) -> float:
    if not history:
        return 0.0
    acc = _make_accountant(accountant)
    acc.history = list(history)
    return float(acc.get_epsilon(delta=delta))


def _last_checkpoint_state(ckpt_path: str | None, key: str) -> dict[str, Any] | None:
    """This callback's state in ``last.ckpt`` beside ``ckpt_path`` (a run's checkpoints)."""
    from longmm.runs import read_checkpoint

    if not ckpt_path:
        return None
    last = Path(ckpt_path).with_name("last.ckpt")
    if not last.is_file():
        return None
    try:
        return read_checkpoint(last).get("callbacks", {}).get(key)
    except LongmmError:
        return None


def make_dp_compatible(model: nn.Module) -> list[str]:
    """Replace, in place, the layers Opacus cannot train privately (its ``ModuleValidator``
    fixers: batch norm -> group norm, ...) and turn in-place activations out-of-place;
    the names of the replaced layers. Run it before the optimizer is built."""
    from opacus.utils.module_utils import trainable_modules
    from opacus.validators import ModuleValidator

    replaced = []
    for name, sub in list(trainable_modules(model)):
        fixer = ModuleValidator.FIXERS.get(type(sub))
        if fixer is None or not name:
            continue
        new = fixer(sub)
        new.to(next(sub.parameters()).device)
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        parent._modules[leaf] = new
        replaced.append(f"{name}: {type(sub).__name__} -> {type(new).__name__}")
    for module in model.modules():
        if getattr(module, "inplace", False) is True:
            module.inplace = False
    return replaced


def _make_accountant(name: str) -> Any:
    from opacus.accountants import create_accountant

    return create_accountant(mechanism=name)


def _dataset_size(loader: Any) -> int | None:
    dataset = getattr(loader, "dataset", None)
    try:
        return len(dataset) if dataset is not None else None
    except TypeError:
        return None


def _loader_length(loader: Any) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None


def _use_poisson_loader(trainer: L.Trainer, pl_module: L.LightningModule) -> None:
    """Make the fit's training loader an Opacus ``DPDataLoader`` (Poisson sampling at rate
    1 / batches per epoch), wherever the loader comes from."""
    from opacus.data_loader import DPDataLoader

    def wrap(loader: Any) -> Any:
        if isinstance(loader, DPDataLoader):
            return loader
        if not isinstance(loader, DataLoader):
            raise LongmmError(
                f"DPSGD: Poisson sampling needs a torch DataLoader, got {type(loader).__name__}"
            )
        return DPDataLoader.from_data_loader(loader, distributed=False)

    source = getattr(trainer.fit_loop, "_data_source", None)
    instance = getattr(source, "instance", None)
    if isinstance(instance, DataLoader):
        source.instance = wrap(instance)
        return
    owner = trainer.datamodule if trainer.datamodule is not None else pl_module
    original = owner.train_dataloader
    if getattr(original, "_dpsgd_wrapped", False):
        return

    def train_dataloader() -> Any:
        return wrap(original())

    train_dataloader._dpsgd_wrapped = True  # type: ignore[attr-defined]
    owner.train_dataloader = train_dataloader  # type: ignore[method-assign]

"""Image generation: a DCGAN (optionally class-conditional) trained adversarially and
measured by an independent judge, a digit classifier trained on real images.

Quality is measured, not eyeballed. With ``judge`` set to a classifier's run folder, every
validation and test epoch generates samples and reports

- ``confident_share``: the share the judge classifies with probability >= ``confidence``;
- ``coverage``: entropy of the judge's predicted-class histogram / log(classes) (1 = uniform);
- ``fid``: Fréchet distance between generated and real images of the split in the judge's
  penultimate feature space (torchmetrics' FID with the judge as feature extractor), and
  ``fid_real``: the same distance between as many real *training* images and that split, the
  floor a generator that reproduced its training data would reach;
- ``label_agreement`` (conditional only): the share whose judged class is the requested one;
- ``code_purity`` (InfoGAN codes only): the share whose judged class is the most common judged
  class of their code (1: each code draws one digit), and ``code_classes``, that class per code;

and the same judge statistics on the real images of the split (``*_real``) for reference.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from torch import Tensor
from torchmetrics.image.fid import FrechetInceptionDistance

from longmm.errors import LongmmError
from longmm.evaluation.samples import JudgedSamples as JudgedSamples
from longmm.evaluation.samples import JudgeFeatures as JudgeFeatures
from longmm.evaluation.samples import grid_scale as grid_scale
from longmm.evaluation.samples import image_grid as image_grid
from longmm.evaluation.samples import load_judge as load_judge
from longmm.evaluation.samples import save_image_grid as save_image_grid
from longmm.models.gan import DCGANGenerator, DiscriminatorNorm, gan_networks
from longmm.tasks.base import Task

GanLoss = Literal["nonsaturating", "hinge"]


class GAN(Task):
    """A DCGAN, or with ``conditional`` a class-conditional one, trained with manual
    optimization: one discriminator step, then one generator step per batch, each with its
    own Adam (``lr``, ``betas``; ``lr_d`` for the discriminator, default ``lr``).

    ``loss``: ``nonsaturating`` (BCE on logits; the generator maximizes log D(G(z))) or
    ``hinge``; ``r1_gamma`` > 0 adds an R1 gradient penalty on real images every ``r1_every``
    steps. ``ema_decay`` > 0 keeps an exponential moving average of the generator's
    weights, which is what samples, evaluation and ``longmm generate`` use. Images must come
    in [-1, 1]: ``ImageData(normalize="symmetric")``. ``num_classes`` is linked from the data by
    the CLI; only the conditional model uses it.

    ``judge``: a classifier run folder (``longmm fit`` of a CNN recipe on real images). With
    it, validation reports judge metrics on ``val_samples`` generated images and the best
    checkpoint is the one with the lowest ``val/fid``; test reports them on ``test_samples``.
    Without it, the judge metrics are skipped (with a warning) and the last epoch is kept.
    Sample grids from fixed noise go to ``<run>/plots/samples_epoch{N}.png`` every
    ``sample_every_n_epochs`` epochs (0: never) and ``plots/samples.png`` at the end.
    ``truncation`` (off by default) draws sampling noise from a normal truncated to
    [-t, t] for evaluation, grids and ``longmm generate``; training noise is never truncated.

    ``info_categories`` K (unconditional only; off by default) makes it an InfoGAN (Chen et
    al., 2016) with one categorical code: the generator takes z and a code c ~ Uniform{K}
    (through the conditional generator's label path: an embedding of c joined to z; the codes
    are sampled, never data labels), and a head ``Q`` on the discriminator's features predicts
    c from the image. The mutual-information term ``info_weight * CE(Q(G(z, c)), c)`` is
    added to both losses: in the discriminator step on that step's (detached) fakes, where it
    trains ``Q`` and, through the shared features, the discriminator's trunk; in the
    generator step, where the discriminator and ``Q`` are frozen and it pushes the generator
    to make each code recognizable, i.e. a distinct mode. The discriminator's real/fake logit
    never sees the code. Sampling (evaluation, grids, ``sample``, ``longmm generate``) draws
    codes balanced over the K categories (one grid row per code); ``sample(code=k)`` and
    ``longmm generate --code k`` draw one. Evaluation adds ``code_purity``.
    """

    monitor: str | None = "val/fid"
    monitor_mode = "min"

    def __init__(
        self,
        image_size: int = 28,
        channels: int = 1,
        latent_dim: int = 100,
        width: int = 64,
        conditional: bool = False,
        num_classes: int = 10,
        embed_dim: int = 50,
        loss: GanLoss = "nonsaturating",
        d_norm: DiscriminatorNorm = "spectral",
        minibatch_std: bool = True,
        d_dropout: float = 0.0,
        r1_gamma: float = 0.0,
        r1_every: int = 4,
        lr: float = 2e-4,
        lr_d: float | None = None,
        betas: tuple[float, float] = (0.5, 0.999),
        ema_decay: float = 0.999,
        judge: str | None = None,
        confidence: float = 0.9,
        val_samples: int = 1000,
        test_samples: int = 2000,
        sample_every_n_epochs: int = 5,
        sample_seed: int = 0,
        truncation: float | None = None,
        info_categories: int | None = None,
        info_weight: float = 1.0,
    ) -> None:
        super().__init__(optimizer="adam", lr=lr, weight_decay=0.0, scheduler="constant")
        self.save_recipe_hyperparameters()
        self.automatic_optimization = False
        self.image_size = image_size
        self.channels = channels
        self.latent_dim = latent_dim
        self.conditional = conditional
        self.num_classes = num_classes
        self.loss = loss
        self.r1_gamma = r1_gamma
        self.r1_every = max(1, r1_every)
        self.lr_d = lr_d or lr
        self.betas = tuple(betas)
        self.ema_decay = ema_decay
        self.judge_dir = judge
        self.confidence = confidence
        self.val_samples = val_samples
        self.test_samples = test_samples
        self.sample_every_n_epochs = sample_every_n_epochs
        self.sample_seed = sample_seed
        self.truncation = truncation
        self.info_categories = info_categories
        self.info_weight = info_weight
        self.monitor = "val/fid" if judge else None
        self._check_arguments()
        labels = num_classes if conditional else 0
        codes = info_categories or 0
        self.generator, self.discriminator = gan_networks(
            latent_dim,
            channels,
            image_size,
            width,
            labels,
            codes,
            embed_dim,
            d_norm,
            d_dropout,
            minibatch_std,
        )
        self.generator_ema: DCGANGenerator | None = None
        if ema_decay > 0:
            self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        # Fixed noise (and labels or codes: one row per class or code) for the sample grids;
        # not saved, it is made again from ``sample_seed``.
        self._register_sample_grid(num_classes if conditional else codes, sample_seed)
        # Judge-based evaluation; the judge and the FID metrics (which hold it) stay outside
        # the module tree so that they are never saved into this model's checkpoints.
        self.fake_judged = JudgedSamples(10, confidence, num_codes=codes)
        self.real_judged = JudgedSamples(10, confidence)
        self._judging: dict[str, Any] = {}

    # -- sampling -----------------------------------------------------------------------------
    @property
    def sampler(self) -> DCGANGenerator:
        """The generator that makes samples: the moving average when there is one."""
        return self.generator_ema if self.generator_ema is not None else self.generator

    def balanced_labels(self, n: int) -> Tensor | None:
        """``n`` labels cycling through the classes (None for an unconditional model)."""
        return torch.arange(n, device=self.device) % self.num_classes if self.conditional else None

    def balanced_codes(self, n: int) -> Tensor | None:
        """``n`` InfoGAN codes cycling through the categories (None without a code)."""
        if self.info_categories is None:
            return None
        return torch.arange(n, device=self.device) % self.info_categories

    def balanced_inputs(self, n: int) -> Tensor | None:
        """What the generator's label path takes for ``n`` balanced samples: class labels
        (conditional), codes (InfoGAN), or None."""
        return self.balanced_labels(n) if self.conditional else self.balanced_codes(n)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        labels: Tensor | int | None = None,
        seed: int | None = None,
        batch_size: int = 500,
        code: Tensor | int | None = None,
    ) -> Tensor:
        """``n`` images ``(n, C, H, W)`` in [-1, 1] from the sampling generator in eval mode.

        ``labels``: one class for all, a tensor of ``n`` classes, or None (class-balanced for a
        conditional model). ``code`` (InfoGAN only): one category for all, a tensor of ``n``,
        or None (balanced over the categories). ``seed`` makes the noise reproducible without
        touching the global random state.
        """
        if not self.conditional and labels is not None:
            raise LongmmError("this GAN is unconditional: it takes no labels")
        if code is not None:
            if self.info_categories is None:
                raise LongmmError(
                    "this GAN has no categorical code: it takes no code (info_categories is null)"
                )
            labels, check = code, self._check_code
        else:
            check = self._check_label
        if isinstance(labels, int):
            check(labels)
            labels = torch.full((n,), labels, dtype=torch.long, device=self.device)
        elif labels is None:
            labels = self.balanced_inputs(n)
        else:
            labels = labels.to(self.device)
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        z = self.noise(n, generator=g).to(self.device)
        return self._generate(z, labels, batch_size)

    def _check_arguments(self) -> None:
        """A clear error for each ``GAN`` argument out of its range."""
        if self.loss not in ("nonsaturating", "hinge"):
            raise ValueError(f"loss must be 'nonsaturating' or 'hinge', got {self.loss!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if min(self.val_samples, self.test_samples) < 2:
            raise ValueError("val_samples and test_samples must be at least 2 (FID needs two)")
        if self.truncation is not None and self.truncation <= 0:
            raise ValueError(f"truncation must be > 0 (or null for none), got {self.truncation}")
        if self.conditional and self.num_classes < 2:
            raise ValueError(f"a conditional GAN needs num_classes >= 2, got {self.num_classes}")
        if self.info_categories is not None:
            if self.conditional:
                raise ValueError(
                    "info_categories (an InfoGAN code) is for the unconditional GAN; "
                    "set conditional: false or info_categories: null"
                )
            if self.info_categories < 2:
                raise ValueError(
                    f"info_categories must be >= 2 (or null), got {self.info_categories}"
                )
        if not self.info_weight >= 0:
            raise ValueError(f"info_weight must be >= 0, got {self.info_weight}")

    def _register_sample_grid(self, rows: int, sample_seed: int) -> None:
        """Fixed noise and labels (or codes) of the sample grids: 10 per class or code, one
        row each, else 64 unlabelled."""
        grid_n = rows * 10 if rows else 64
        g = torch.Generator().manual_seed(sample_seed)
        self.register_buffer("fixed_noise", self.noise(grid_n, generator=g), persistent=False)
        self.register_buffer(
            "fixed_labels",
            torch.arange(rows).repeat_interleave(10) if rows else torch.zeros(0),
            persistent=False,
        )

    def noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` latent vectors ``(n, latent_dim)`` for sampling (not for training): standard
        normal, or with ``truncation`` t each coordinate redrawn until |z| <= t (the truncation
        trick, Brock et al. 2019: fewer odd samples, less variety; coverage and FID show it)."""
        z = torch.randn(n, self.latent_dim, generator=generator)
        if self.truncation is not None:
            outside = z.abs() > self.truncation
            while outside.any():
                z[outside] = torch.randn(int(outside.sum()), generator=generator)
                outside = z.abs() > self.truncation
        return z

    def _generate(self, z: Tensor, labels: Tensor | None, batch_size: int = 500) -> Tensor:
        net = self.sampler
        was_training = net.training
        net.eval()
        out = []
        for start in range(0, len(z), batch_size):
            part = labels[start : start + batch_size] if labels is not None else None
            out.append(net(z[start : start + batch_size], part))
        net.train(was_training)
        return torch.cat(out) if out else z.new_zeros(0, self.channels, *[self.image_size] * 2)

    def _check_label(self, label: int) -> None:
        if not 0 <= label < self.num_classes:
            raise LongmmError(
                f"label {label} is out of range: this GAN knows classes 0..{self.num_classes - 1}"
            )

    def _check_code(self, code: int) -> None:
        k = self.info_categories or 0
        if not 0 <= code < k:
            raise LongmmError(f"code {code} is out of range: this GAN has codes 0..{k - 1}")

    # -- training ----------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=self.lr, betas=self.betas)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=self.lr_d, betas=self.betas)
        return [opt_g, opt_d]

    def _d_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        if self.loss == "hinge":
            return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
        return F.softplus(-real).mean() + F.softplus(fake).mean()  # BCE on logits

    def _r1_penalty(self, d_real: Tensor, real: Tensor) -> Tensor:
        """R1 (Mescheder et al., 2018): the squared gradient norm of D on real images, applied
        every ``r1_every`` steps with its weight scaled up to match (lazy regularization)."""
        (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
        penalty = grad.square().sum(dim=(1, 2, 3)).mean()
        self.log("train/r1", penalty.detach(), on_step=False, on_epoch=True, batch_size=len(real))
        return 0.5 * self.r1_gamma * self.r1_every * penalty

    def _g_loss(self, fake: Tensor) -> Tensor:
        return -fake.mean() if self.loss == "hinge" else F.softplus(-fake).mean()

    def _codes(self, b: int) -> Tensor | None:
        """Training codes c ~ Uniform{K} (None without ``info_categories``)."""
        if self.info_categories is None:
            return None
        return torch.randint(self.info_categories, (b,), device=self.device)

    def _info_loss(self, code_logits: Tensor, codes: Tensor | None) -> Tensor | None:
        """``info_weight * CE(Q(x), c)``: the InfoGAN mutual-information lower bound's loss
        (the code's entropy, a constant, left out)."""
        if codes is None:
            return None
        return self.info_weight * F.cross_entropy(code_logits.float(), codes)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        real = batch["image"]
        labels = batch["label"] if self.conditional else None
        b = len(real)

        # Discriminator: real against detached fakes; with a code, Q learns to read it from
        # those fakes (through the shared trunk).
        codes = self._codes(b)
        inputs = labels if self.conditional else codes
        with torch.no_grad():
            fake = self.generator(torch.randn(b, self.latent_dim, device=self.device), inputs)
        r1 = self.r1_gamma > 0 and batch_idx % self.r1_every == 0
        if r1:
            real = real.detach().requires_grad_(True)
        d_real = self.discriminator(real, labels)
        d_fake, q_fake = self.discriminator.with_code(fake, labels)
        loss_d = self._d_loss(d_real, d_fake)
        info_d = self._info_loss(q_fake, codes)
        if info_d is not None:
            loss_d = loss_d + info_d
        if r1:
            loss_d = loss_d + self._r1_penalty(d_real, real)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss_d)
        opt_d.step()

        # Generator: fresh noise (and codes), the discriminator and Q frozen.
        self.toggle_optimizer(opt_g)
        codes = self._codes(b)
        inputs = labels if self.conditional else codes
        fake = self.generator(torch.randn(b, self.latent_dim, device=self.device), inputs)
        g_fake, q_gen = self.discriminator.with_code(fake, labels)
        loss_g = self._g_loss(g_fake)
        info_g = self._info_loss(q_gen, codes)
        if info_g is not None:
            loss_g = loss_g + info_g
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss_g)
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        self._update_ema()

        log = {"on_step": False, "on_epoch": True, "batch_size": b}
        self.log("train/loss_d", loss_d, prog_bar=True, **log)
        self.log("train/loss_g", loss_g, prog_bar=True, **log)
        self.log("train/d_real", torch.sigmoid(d_real).mean(), **log)
        self.log("train/d_fake", torch.sigmoid(d_fake).mean(), **log)
        if info_g is not None and codes is not None:
            # Q's cross-entropy on the generator step's codes (without the weight), and how
            # often Q reads the code right: both show whether the codes became distinct.
            self.log("train/info_ce", F.cross_entropy(q_gen.detach().float(), codes), **log)
            accuracy = (q_gen.detach().argmax(dim=1) == codes).float().mean()
            self.log("train/code_accuracy", accuracy, **log)

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.generator_ema is None:
            return
        # Warm-up: early on the average follows the generator closely.
        t = int(self.ema_updates)
        decay = min(self.ema_decay, (1 + t) / (10 + t))
        for avg, p in zip(
            self.generator_ema.parameters(), self.generator.parameters(), strict=True
        ):
            avg.lerp_(p, 1.0 - decay)
        for avg, b in zip(self.generator_ema.buffers(), self.generator.buffers(), strict=True):
            avg.copy_(b)
        self.ema_updates += 1

    def on_train_epoch_end(self) -> None:
        every = self.sample_every_n_epochs
        epoch = self.current_epoch + 1
        if every and epoch % every == 0:
            self._write_grid(
                Path(self.trainer.default_root_dir) / "plots" / f"samples_epoch{epoch}.png"
            )

    @rank_zero_only
    def _write_grid(self, path: Path) -> None:
        rows = self.conditional or self.info_categories is not None
        labels = self.fixed_labels if rows else None
        images = self._generate(self.fixed_noise, labels)
        nrow = 10 if rows else 8
        save_image_grid(images, path, nrow=nrow, scale=grid_scale(self.image_size))

    # -- setup: the data's range, the judge --------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        mode = getattr(dm, "normalize", "symmetric")
        if mode != "symmetric":
            raise LongmmError(
                f"GAN: the generator makes images in [-1, 1]; set the data's "
                f"normalize: symmetric (data.init_args.normalize), got {mode!r}"
            )
        for name, want in (("image_size", self.image_size), ("channels", self.channels)):
            have = getattr(dm, name, None)
            if have is not None and have != want:
                raise LongmmError(f"GAN: model.{name} is {want} but the data's {name} is {have}")
        if self.judge_dir is None:
            if "judge" not in self._judging:
                rank_zero_warn(
                    "GAN without a judge: confident share, coverage, FID and label agreement "
                    "are skipped, and the last epoch is kept (set model.init_args.judge to a "
                    "classifier run folder to measure them)."
                )
                self._judging["judge"] = None
            return
        if self._judging.get("judge") is None:
            judge, prep = load_judge(self.judge_dir)
            self._check_judge(prep, dm)
            self._judging["judge"] = judge
            self.fake_judged = JudgedSamples(
                judge.num_classes, self.confidence, num_codes=self.info_categories or 0
            )
            self.real_judged = JudgedSamples(judge.num_classes, self.confidence)

    def _check_judge(self, prep: dict[str, Any], dm: Any) -> None:
        size, channels = prep.get("image_size"), prep.get("channels")
        if (size, channels) != (self.image_size, self.channels):
            raise LongmmError(
                f"judge {self.judge_dir} was trained on {size}x{size}x{channels} images; "
                f"this GAN makes {self.image_size}x{self.image_size}x{self.channels}"
            )
        classes = getattr(dm, "classes", None)
        if self.conditional and classes and list(prep.get("classes", [])) != list(classes):
            raise LongmmError(
                f"judge {self.judge_dir} classes {prep.get('classes')} differ from the data's "
                f"{list(classes)}: label agreement would compare different labels"
            )

    # -- evaluation ------------------------------------------------------------------------
    @property
    def judge(self) -> JudgeFeatures | None:
        return self._judging.get("judge")

    def _new_fid(self) -> FrechetInceptionDistance:
        # A custom feature module: torchmetrics passes images to it unchanged (``normalize``
        # only matters for its own Inception network) and reads ``num_features`` from it.
        fid = FrechetInceptionDistance(feature=self.judge, normalize=True)
        return fid.to(self.device)

    def _start_eval(self, stage: str) -> None:
        if self.judge is None:
            return
        self.judge.to(self.device)
        self._judging[f"fid_{stage}"] = self._new_fid()
        need_reference = f"fid_real_{stage}" not in self._judging
        self._judging[f"fid_ref_{stage}"] = self._new_fid() if need_reference else None
        self.fake_judged.reset()
        self.real_judged.reset()

    def _eval_real(self, batch: dict[str, Tensor], stage: str) -> None:
        if self.judge is None or self.trainer.sanity_checking:
            return
        images = batch["image"]
        self._judging[f"fid_{stage}"].update(images, real=True)
        if self._judging[f"fid_ref_{stage}"] is not None:
            self._judging[f"fid_ref_{stage}"].update(images, real=True)
        self.real_judged.update(self.judge.probabilities(images), batch.get("label"))

    def _end_eval(self, stage: str, n: int, seed: int) -> None:
        if self.judge is None or self.trainer.sanity_checking:
            self.eval_results[stage] = {}
            return
        world, rank = self.trainer.world_size, self.trainer.global_rank
        per_rank = math.ceil(n / world)
        labels = self.balanced_inputs(n)  # class labels, InfoGAN codes or None
        if labels is not None:
            labels = labels[rank * per_rank : (rank + 1) * per_rank]
        g = torch.Generator().manual_seed(seed * 1000 + rank)
        z = self.noise(min(per_rank, n - rank * per_rank), generator=g)
        fid = self._judging[f"fid_{stage}"]
        for start in range(0, len(z), 500):
            part = labels[start : start + 500] if labels is not None else None
            images = self._generate(z[start : start + 500].to(self.device), part)
            fid.update(images, real=False)
            probs = self.judge.probabilities(images)
            if self.conditional:
                self.fake_judged.update(probs, part)
            else:
                self.fake_judged.update(probs, codes=part)
        results: dict[str, Any] = {"count": n, "fid": float(fid.compute())}
        results["fid_real"] = self._fid_real(stage, n)
        fake = self.fake_judged.compute()
        real = self.real_judged.compute()
        results["confident_share"] = fake["confident_share"]
        results["coverage"] = fake["coverage"]
        for key in ("label_agreement", "code_purity", "code_classes"):
            if key in fake:
                results[key] = fake[key]
        results["confident_share_real"] = real["confident_share"]
        results["coverage_real"] = real["coverage"]
        if "label_agreement" in real:
            results["judge_accuracy_real"] = real["label_agreement"]
        results["class_share"] = fake["class_share"]
        self.eval_results[stage] = results
        for key in ("fid", "confident_share", "coverage", "label_agreement", "code_purity"):
            if key in results:
                self.log(f"{stage}/{key}", results[key], prog_bar=key == "fid")

    def _fid_real(self, stage: str, n: int) -> float | None:
        """FID between ``n`` real training images and the split's real images; computed once
        per split (it does not depend on the generator)."""
        key = f"fid_real_{stage}"
        if key in self._judging:
            return self._judging[key]
        train = self._train_images(n)
        value = None
        if train is not None and len(train) > 1:
            ref = self._judging[f"fid_ref_{stage}"]
            for start in range(0, len(train), 500):
                ref.update(train[start : start + 500].to(self.device), real=False)
            value = float(ref.compute())
        self._judging[key] = value
        return value

    def _train_images(self, n: int) -> Tensor | None:
        """A seeded subset of ``n`` training images in [-1, 1] (this rank's share)."""
        dm = getattr(self.trainer, "datamodule", None)
        dataset = getattr(dm, "datasets", {}).get("train") if dm is not None else None
        if dataset is None:
            rank_zero_warn("GAN: no training split to compare with; fid_real is skipped")
            return None
        g = torch.Generator().manual_seed(self.sample_seed)
        index = torch.randperm(len(dataset), generator=g)[:n]
        index = index[self.trainer.global_rank :: self.trainer.world_size]
        images = torch.stack([dataset[int(i)]["image"] for i in index])
        if images.dtype == torch.uint8:
            return images.float() / 127.5 - 1.0
        return images.float()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_real(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_real(batch, "test")

    def on_validation_epoch_start(self) -> None:
        self._start_eval("val")

    def on_test_epoch_start(self) -> None:
        self._start_eval("test")

    def on_validation_epoch_end(self) -> None:
        self._end_eval("val", self.val_samples, self.sample_seed + 1)

    def on_test_epoch_end(self) -> None:
        self._end_eval("test", self.test_samples, self.sample_seed + 2)

    # -- the run folder ----------------------------------------------------------------------
    def write_artifacts(self, run_dir: str | Path) -> list[str]:
        """Final sample grid (and training curves); paths relative to the run folder."""
        from longmm.evaluation.plots import plot_curves

        run = Path(run_dir)
        self._write_grid(run / "plots" / "samples.png")
        written = ["plots/samples.png"]
        logs = sorted(
            (run / "logs").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name[8:])
        )
        if logs and plot_curves(
            logs, run / "plots" / "gan_curves.png", metrics=("loss_d", "loss_g", "fid")
        ):
            written.append("plots/gan_curves.png")
        return written

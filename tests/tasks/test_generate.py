"""The GAN task end to end on embedded digits: a short fit through the CLI, judge metrics
from a tiny judge trained here, sample grids, `longmm generate`, checkpoint round trip; the
InfoGAN code option (shapes, gradients, balanced codes, round trip, `--code`)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from longmm.cli import generate, main
from longmm.data import ImageData
from longmm.errors import LongmmError
from longmm.runs import load_weights
from longmm.tasks import GAN
from longmm.tasks.generate import JudgedSamples, image_grid, load_judge

RECIPES = Path(__file__).resolve().parents[2] / "recipes"

JUDGE_RECIPE = """\
seed_everything: 0
model:
  class_path: longmm.tasks.Classify
  init_args:
    encoders:
      image:
        class_path: longmm.encoders.ArticleCNN
        init_args: {in_channels: 1, image_size: 8, dim: 32}
    lr: 0.003
data:
  class_path: longmm.data.ImageData
  init_args: {format: digits, split: [0.7, 0.1, 0.2], batch_size: 64}
trainer: {max_epochs: 2, enable_progress_bar: false, enable_model_summary: false}
"""

QUICK = [
    "--trainer.max_epochs",
    "2",
    "--trainer.limit_train_batches",
    "2",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
    "--model.init_args.width",
    "8",
    "--model.init_args.val_samples",
    "64",
    "--model.init_args.test_samples",
    "100",
    "--model.init_args.sample_every_n_epochs",
    "1",
]


@pytest.fixture(scope="module")
def judge_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small digit classifier on the same 8x8 images: enough to exercise the metrics."""
    root = tmp_path_factory.mktemp("judge")
    recipe = root / "judge.yaml"
    recipe.write_text(JUDGE_RECIPE)
    main(["fit", "--config", str(recipe), "--out", str(root / "run")])
    return root / "run"


def fit_gan(out: Path, *extra: str) -> dict:
    main(["fit", "--config", str(RECIPES / "gan_digits.yaml"), *QUICK, *extra, "--out", str(out)])
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory: pytest.TempPathFactory, judge_run: Path) -> Path:
    out = tmp_path_factory.mktemp("gan") / "run"
    fit_gan(out, "--model.init_args.judge", str(judge_run))
    return out


@pytest.fixture(scope="module")
def cgan_run(tmp_path_factory: pytest.TempPathFactory, judge_run: Path) -> Path:
    out = tmp_path_factory.mktemp("cgan") / "run"
    fit_gan(out, "--model.init_args.judge", str(judge_run), "--model.init_args.conditional", "true")
    return out


@pytest.fixture(scope="module")
def info_run(tmp_path_factory: pytest.TempPathFactory, judge_run: Path) -> Path:
    out = tmp_path_factory.mktemp("infogan") / "run"
    fit_gan(out, "--model.init_args.judge", str(judge_run), *INFO)
    return out


INFO = ["--model.init_args.info_categories", "4", "--model.init_args.info_weight", "1.0"]


def test_fit_writes_judge_metrics_and_sample_grids(gan_run: Path) -> None:
    metrics = json.loads((gan_run / "metrics.json").read_text())
    test = metrics["test"]
    for key in ("confident_share", "coverage", "fid", "fid_real", "confident_share_real"):
        assert isinstance(test[key], float), key
    assert 0 <= test["confident_share"] <= 1 and 0 <= test["coverage"] <= 1
    assert test["fid"] > 0 and test["fid_real"] >= 0
    assert test["count"] == 100 and len(test["class_share"]) == 10
    assert "label_agreement" not in test
    assert metrics["val"]["count"] == 64
    assert metrics["monitor"]["name"] == "val/fid"
    for name in ("samples_epoch1.png", "samples_epoch2.png", "samples.png", "gan_curves.png"):
        assert (gan_run / "plots" / name).is_file(), name
    with Image.open(gan_run / "plots" / "samples.png") as grid:
        assert grid.mode == "L" and grid.width > 8 * 8
    assert "plots/samples.png" in (gan_run / "report.md").read_text()
    data = json.loads((gan_run / "data.json").read_text())
    assert data["preprocessing"]["normalize"] == "symmetric"
    assert data["preprocessing"]["mean"] == [0.5] and data["preprocessing"]["std"] == [0.5]
    assert not list(gan_run.rglob("*.tmp"))


def test_conditional_fit_reports_label_agreement(cgan_run: Path) -> None:
    test = json.loads((cgan_run / "metrics.json").read_text())["test"]
    assert 0 <= test["label_agreement"] <= 1
    assert 0 <= test["judge_accuracy_real"] <= 1
    # Class-balanced samples: 100 images, 10 of each class were requested.
    assert test["count"] == 100


def test_checkpoint_round_trip(gan_run: Path) -> None:
    model = GAN.load_from_checkpoint(gan_run / "checkpoints" / "best.ckpt", weights_only=True)
    weights = load_weights(gan_run / "checkpoints" / "best.safetensors")
    state = model.state_dict()
    assert set(weights) == set(state)
    assert all(torch.equal(state[k], weights[k]) for k in weights)
    assert not any(k.startswith(("judge", "_judging")) for k in state)  # the judge is not saved
    assert model.image_size == 8 and model.sampler is model.generator_ema
    a = model.sample(6, seed=3)
    b = GAN.load_from_checkpoint(gan_run / "checkpoints" / "best.ckpt").sample(6, seed=3)
    assert a.shape == (6, 1, 8, 8) and torch.equal(a, b)


def test_generate_command_writes_a_png(gan_run: Path, cgan_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "grid.png"
    generate.main(["--run", str(gan_run), "--n", "10", "--out", str(out)])
    with Image.open(out) as image:
        assert image.format == "PNG"
        size = image.size
    again = tmp_path / "again.png"
    generate.main(["--run", str(gan_run), "--n", "10", "--out", str(again)])
    assert again.read_bytes() == out.read_bytes()  # same seed, same grid
    sevens = tmp_path / "sevens.png"
    generate.main(["--run", str(cgan_run), "--n", "4", "--label", "7", "--out", str(sevens)])
    with Image.open(sevens) as image:
        assert image.size != size
    assert not list(tmp_path.glob("*.tmp"))


def test_generate_command_errors(gan_run: Path, cgan_run: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "g.png")
    with pytest.raises(LongmmError, match="run folder not found"):
        generate.main(["--run", str(tmp_path / "nope"), "--out", out])
    (tmp_path / "empty").mkdir()
    with pytest.raises(LongmmError, match="checkpoint not found"):
        generate.main(["--run", str(tmp_path / "empty"), "--out", out])
    with pytest.raises(LongmmError, match="unconditional"):
        generate.main(["--run", str(gan_run), "--label", "3", "--out", out])
    with pytest.raises(LongmmError, match="out of range"):
        generate.main(["--run", str(cgan_run), "--label", "10", "--out", out])
    with pytest.raises(SystemExit):
        generate.main(["--run", str(gan_run), "--n", "0", "--out", out])
    assert not (tmp_path / "g.png").exists()


def test_without_a_judge_the_metrics_are_skipped(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="without a judge"):
        metrics = fit_gan(tmp_path / "run", "--trainer.max_epochs", "1")
    assert metrics["test"] == {} and metrics["monitor"]["name"] is None
    assert (tmp_path / "run" / "plots" / "samples.png").is_file()
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").is_file()


def test_resumed_run_ends_with_the_same_weights(tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    fit_gan(whole)
    parts = tmp_path / "parts"
    fit_gan(parts, "--trainer.max_epochs", "1")
    fit_gan(parts, "--ckpt_path", "last")
    a = load_weights(whole / "checkpoints" / "best.safetensors")
    b = load_weights(parts / "checkpoints" / "best.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_r1_penalty_and_hinge_loss_train(tmp_path: Path) -> None:
    extra = ["--model.init_args.r1_gamma", "1.0", "--model.init_args.r1_every", "1"]
    extra += ["--model.init_args.loss", "hinge", "--model.init_args.d_norm", "none"]
    fit_gan(tmp_path / "run", "--trainer.max_epochs", "1", *extra)
    log = (tmp_path / "run" / "logs" / "version_0" / "metrics.csv").read_text()
    assert "train/r1" in log.splitlines()[0]


def test_standard_normalization_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        fit_gan(tmp_path / "run", "--trainer.max_epochs", "1", "--data.normalize", "standard")
    assert exc.value.code == 2
    assert "normalize: symmetric" in capsys.readouterr().err


def test_missing_judge_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        fit_gan(tmp_path / "run", "--model.init_args.judge", str(tmp_path / "no_judge"))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"judge {tmp_path / 'no_judge'}" in err and "not found" in err


def test_a_label_smoothed_judge_is_flagged(judge_run: Path, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the plainly trained judge loads without a warning
        load_judge(judge_run)
    recipe = tmp_path / "judge.yaml"
    recipe.write_text(JUDGE_RECIPE.replace("lr: 0.003", "lr: 0.003\n    label_smoothing: 0.1"))
    main(
        ["fit", "--config", str(recipe), "--trainer.max_epochs", "1", "--out", str(tmp_path / "j")]
    )
    with pytest.warns(UserWarning, match=r"label_smoothing=0.1: .* capped near 0\.910"):
        load_judge(tmp_path / "j")


def test_symmetric_normalization_maps_pixels_to_minus_one_one() -> None:
    dm = ImageData(format="digits", normalize="symmetric")
    dm.setup("fit")
    batch = dm.on_after_batch_transfer({"image": dm.datasets["train"].images[:32]}, 0)
    assert batch["image"].min() >= -1 and batch["image"].max() <= 1
    assert batch["image"].min() == -1 and batch["image"].max() == 1
    restored = ImageData(format="digits")
    restored.load_state_dict(dm.state_dict())
    assert restored.normalizer.mode == "symmetric"


def test_sample_labels() -> None:
    model = GAN(image_size=8, width=8, conditional=True, num_classes=10)
    assert model.sample(12).shape == (12, 1, 8, 8)
    assert model.sample(3, labels=4, seed=0).shape == (3, 1, 8, 8)
    assert torch.equal(model.sample(3, seed=1), model.sample(3, seed=1))
    with pytest.raises(LongmmError, match="out of range"):
        model.sample(2, labels=10)
    with pytest.raises(LongmmError, match="unconditional"):
        GAN(image_size=8, width=8).sample(2, labels=1)


def test_truncated_noise_stays_inside_and_is_seeded() -> None:
    model = GAN(image_size=8, width=8, latent_dim=16, truncation=0.5)
    z = model.noise(200, generator=torch.Generator().manual_seed(0))
    assert z.shape == (200, 16) and z.abs().max() <= 0.5
    assert torch.equal(z, model.noise(200, generator=torch.Generator().manual_seed(0)))
    assert model.fixed_noise.abs().max() <= 0.5
    assert GAN(image_size=8, width=8).noise(2000).abs().max() > 2  # off by default
    with pytest.raises(ValueError, match="truncation"):
        GAN(image_size=8, width=8, truncation=0)


def test_judged_samples_metric() -> None:
    metric = JudgedSamples(num_classes=4, confidence=0.9)
    probs = torch.tensor([[0.95, 0.05, 0, 0], [0, 0.5, 0.5, 0], [0, 0, 0.05, 0.95]])
    metric.update(probs, torch.tensor([0, 2, 3]))
    out = metric.compute()
    assert out["confident_share"] == pytest.approx(2 / 3)
    assert out["label_agreement"] == pytest.approx(2 / 3)
    # Predicted classes 0, 1, 3: three of four classes equally often.
    assert out["coverage"] == pytest.approx(
        torch.log(torch.tensor(3.0)) / torch.log(torch.tensor(4.0))
    )


def test_image_grid_layout() -> None:
    images = torch.zeros(10, 1, 8, 8)
    grid = image_grid(images, nrow=4, padding=2, scale=1)
    assert grid.size == (4 * 10 + 2, 3 * 10 + 2)
    rgb = image_grid(torch.zeros(2, 3, 8, 8), nrow=2, scale=2)
    assert rgb.mode == "RGB" and rgb.size == (2 * (2 * 10 + 2), 2 * 12)


# ---- InfoGAN code ----------------------------------------------------------------------------


def test_infogan_fit_reports_code_purity_and_logs_q(info_run: Path) -> None:
    metrics = json.loads((info_run / "metrics.json").read_text())
    test = metrics["test"]
    assert test["count"] == 100 and "label_agreement" not in test
    assert 0 < test["code_purity"] <= 1 and len(test["code_classes"]) == 4
    assert all(0 <= c < 10 for c in test["code_classes"])
    for key in ("confident_share", "coverage", "fid"):
        assert isinstance(test[key], float), key
    header = (info_run / "logs" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    assert "train/info_ce" in header and "train/code_accuracy" in header
    with Image.open(info_run / "plots" / "samples.png") as grid:
        # One row of 10 per code: 4 rows of 8x8 images, upscaled x8, 2-pixel padding.
        assert grid.size == ((10 * 10 + 2) * 8, (4 * 10 + 2) * 8)


def test_infogan_checkpoint_round_trip(info_run: Path) -> None:
    ckpt = info_run / "checkpoints" / "best.ckpt"
    model = GAN.load_from_checkpoint(ckpt, weights_only=True)
    assert model.info_categories == 4 and model.info_weight == 1.0
    assert model.hparams["info_categories"] == 4 and not model.conditional
    weights = load_weights(info_run / "checkpoints" / "best.safetensors")
    state = model.state_dict()
    assert set(weights) == set(state)
    assert all(torch.equal(state[k], weights[k]) for k in weights)
    assert {"generator.embed.weight", "generator_ema.embed.weight"} <= set(state)
    assert "discriminator.code_head.weight" in state
    a = model.sample(8, seed=3)
    b = GAN.load_from_checkpoint(ckpt).sample(8, seed=3)
    assert a.shape == (8, 1, 8, 8) and torch.equal(a, b)
    # The balanced default is codes 0, 1, 2, 3, 0, ...: the same as asking for them.
    assert torch.equal(a, model.sample(8, seed=3, code=torch.arange(8) % 4))
    assert not torch.equal(a, model.sample(8, seed=3, code=0))


def test_generate_command_with_codes(info_run: Path, gan_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "code2.png"
    generate.main(["--run", str(info_run), "--n", "6", "--code", "2", "--out", str(out)])
    grid = tmp_path / "grid.png"
    generate.main(["--run", str(info_run), "--n", "8", "--out", str(grid)])
    with Image.open(out) as image, Image.open(grid) as whole:
        assert image.format == "PNG" and whole.size == ((4 * 10 + 2) * 8, (2 * 10 + 2) * 8)
    bad = str(tmp_path / "bad.png")
    with pytest.raises(LongmmError, match="out of range"):
        generate.main(["--run", str(info_run), "--code", "4", "--out", bad])
    with pytest.raises(LongmmError, match="no categorical code"):
        generate.main(["--run", str(gan_run), "--code", "0", "--out", bad])
    with pytest.raises(LongmmError, match="unconditional"):
        generate.main(["--run", str(info_run), "--label", "1", "--out", bad])
    assert not (tmp_path / "bad.png").exists()


def test_infogan_sampling_draws_balanced_codes() -> None:
    model = GAN(image_size=8, width=8, latent_dim=16, info_categories=3)
    assert torch.equal(model.balanced_codes(7), torch.tensor([0, 1, 2, 0, 1, 2, 0]))
    assert torch.equal(model.balanced_inputs(7), model.balanced_codes(7))
    assert model.balanced_labels(7) is None  # codes are not labels
    assert model.fixed_noise.shape == (30, 16)
    assert torch.equal(model.fixed_labels, torch.arange(3).repeat_interleave(10))
    assert model.sample(5).shape == (5, 1, 8, 8)
    with pytest.raises(LongmmError, match="out of range"):
        model.sample(2, code=3)
    with pytest.raises(LongmmError, match="unconditional"):
        model.sample(2, labels=1)
    with pytest.raises(LongmmError, match="no categorical code"):
        GAN(image_size=8, width=8).sample(2, code=0)
    assert GAN(image_size=8, width=8).balanced_codes(4) is None


def test_infogan_options_are_checked() -> None:
    with pytest.raises(ValueError, match="unconditional GAN"):
        GAN(image_size=8, width=8, conditional=True, info_categories=10)
    with pytest.raises(ValueError, match="info_categories must be >= 2"):
        GAN(image_size=8, width=8, info_categories=1)
    with pytest.raises(ValueError, match="info_weight"):
        GAN(image_size=8, width=8, info_categories=4, info_weight=-1.0)


def test_infogan_q_loss_reaches_g_and_q_and_is_learned() -> None:
    """The mutual-information loss has gradients in the generator (its code path included)
    and in Q; minimized by both for a few steps on their own, Q learns to read the code."""
    torch.manual_seed(0)
    model = GAN(image_size=8, width=8, latent_dim=16, info_categories=4, info_weight=2.0)
    g, d = model.generator, model.discriminator
    codes = torch.arange(32) % 4
    loss = model._info_loss(d.with_code(g(torch.randn(32, 16), codes))[1], codes)
    assert torch.isfinite(loss)
    loss.backward()
    for name, param in (
        ("generator embed", g.embed.weight),
        ("generator first layer", g.project[0].weight),
        ("generator last layer", g.body[-2].weight),
        ("Q head", d.code_head.weight),
    ):
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    opt = torch.optim.Adam([*g.parameters(), *d.parameters()], lr=5e-3)
    losses = []
    for _ in range(50):
        codes = torch.randint(4, (32,))
        loss = model._info_loss(d.with_code(g(torch.randn(32, 16), codes))[1], codes)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    start, end = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert start == pytest.approx(2.0 * math.log(4), rel=0.1)  # chance: lambda * log K
    assert end < 0.75 * start, losses  # seeds 0-3 end at 0.01-0.6 of the start


def test_judged_samples_code_purity() -> None:
    metric = JudgedSamples(num_classes=3, num_codes=2)
    probs = torch.eye(3)[torch.tensor([0, 0, 1, 2, 2, 2])]
    metric.update(probs, codes=torch.tensor([0, 0, 0, 1, 1, 1]))
    out = metric.compute()
    assert out["code_purity"] == pytest.approx(5 / 6) and out["code_classes"] == [0, 2]
    plain = JudgedSamples(num_classes=3)
    plain.update(probs)
    assert "code_purity" not in plain.compute()
    with pytest.raises(ValueError, match="num_codes"):
        JudgedSamples(num_classes=3).update(probs, codes=torch.zeros(6, dtype=torch.long))


# ---- real data (slow) -------------------------------------------------------------------------

SHARED_MNIST = Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist"

MNIST_JUDGE = """\
seed_everything: 0
model:
  class_path: longmm.tasks.Classify
  init_args:
    encoders:
      image:
        class_path: longmm.encoders.ArticleCNN
        init_args: {in_channels: 1, image_size: 28, dim: 64}
    lr: 0.003
data:
  class_path: longmm.data.ImageData
  init_args: {root: ROOT, format: mnist, split: [0.7, 0.1, 0.2], batch_size: 128}
trainer: {max_epochs: 1, enable_progress_bar: false, enable_model_summary: false}
"""


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason=f"{SHARED_MNIST} is missing")
@pytest.mark.parametrize("recipe", ["gan_mnist", "cgan_mnist", "gan_mnist_plain"])
def test_mnist_recipes_report_judge_metrics(recipe: str, tmp_path: Path) -> None:
    """The MNIST recipes run end to end on real MNIST for a few batches, judged by a quickly
    trained classifier (the real measurement uses the CNN recipe's run, see the recipes)."""
    judge_recipe = tmp_path / "judge.yaml"
    judge_recipe.write_text(MNIST_JUDGE.replace("ROOT", str(SHARED_MNIST)))
    main(["fit", "--config", str(judge_recipe), "--out", str(tmp_path / "judge")])
    out = tmp_path / recipe
    main(
        [
            "fit",
            "--config",
            str(RECIPES / f"{recipe}.yaml"),
            "--data.root",
            str(SHARED_MNIST),
            "--model.init_args.judge",
            str(tmp_path / "judge"),
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_train_batches",
            "20",
            "--trainer.check_val_every_n_epoch",
            "1",
            "--trainer.enable_progress_bar",
            "false",
            "--out",
            str(out),
        ]
    )
    test = json.loads((out / "metrics.json").read_text())["test"]
    for key in ("confident_share", "coverage", "fid", "fid_real"):
        assert isinstance(test[key], float), key
    assert test["count"] == 2000 and test["fid"] > test["fid_real"]
    assert ("label_agreement" in test) == (recipe == "cgan_mnist")
    assert ("code_purity" in test) == (recipe == "gan_mnist")
    assert (out / "plots" / "samples.png").is_file()

"""Fusion strategies: forward/backward, masks respected, the bind contract, modality dropout,
and a Classify with two encoders training through each strategy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from longmm.encoders import AudioCNN, EncoderOutput, ResNetCNN, SmallViT
from longmm.fusion import (
    ConcatFusion,
    CrossModalFusion,
    Fusion,
    GatedFusion,
    GraphFusion,
    LateFusion,
    ModalityDropout,
    TensorFusion,
    WeightedFusion,
)
from longmm.fusion.graph import pyg_available, segment_means
from longmm.tasks import Classify

D, C = 16, 5
DIMS = {"image": D, "audio": D}

STRATEGIES: dict[str, Callable[[], Fusion]] = {
    "concat": lambda: ConcatFusion(out_dim=12),
    "late_mean": lambda: LateFusion(out_dim=12),
    "late_learned": lambda: LateFusion(out_dim=12, combine="learned"),
    "weighted": lambda: WeightedFusion(out_dim=12),
    "cross": lambda: CrossModalFusion(out_dim=12, heads=2, layers=2),
    "gated": lambda: GatedFusion(out_dim=12),
    "graph": lambda: GraphFusion(out_dim=12, heads=2, rounds=2, segments=3),
    "graph_torch": lambda: GraphFusion(out_dim=12, heads=2, segments=3, backend="torch"),
    "tensor": lambda: TensorFusion(out_dim=12, rank=3),
}
WEIGHTED = {"late_mean", "late_learned", "weighted", "gated"}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spin-waits on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def bound(name: str, dims: dict[str, int] | None = None) -> Fusion:
    torch.manual_seed(0)
    fusion = STRATEGIES[name]()
    fusion.bind(dims or DIMS, C)
    return fusion


def inputs(b: int = 4, n_image: int = 4, n_audio: int = 6, seed: int = 1) -> dict:
    """Random encoder outputs; the audio of sample 1 is padded after 3 tokens."""
    g = torch.Generator().manual_seed(seed)
    audio_mask = torch.ones(b, n_audio, dtype=torch.bool)
    audio_mask[1, 3:] = False
    return {
        "image": EncoderOutput(
            tokens=torch.randn(b, n_image, D, generator=g),
            mask=torch.ones(b, n_image, dtype=torch.bool),
            pooled=torch.randn(b, D, generator=g),
        ),
        "audio": EncoderOutput(
            tokens=torch.randn(b, n_audio, D, generator=g),
            mask=audio_mask,
            pooled=torch.randn(b, D, generator=g),
        ),
    }


def drop_sample(out: EncoderOutput, i: int, garbage: float = float("nan")) -> EncoderOutput:
    """``out`` with sample ``i`` missing: mask all False, values garbage (never to be read)."""
    mask, tokens, pooled = out.mask.clone(), out.tokens.clone(), out.pooled.clone()
    mask[i] = False
    tokens[i] = garbage
    pooled[i] = garbage
    return EncoderOutput(tokens=tokens, mask=mask, pooled=pooled)


def select(out: EncoderOutput, rows: list[int]) -> EncoderOutput:
    return EncoderOutput(tokens=out.tokens[rows], mask=out.mask[rows], pooled=out.pooled[rows])


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_forward_backward(name: str) -> None:
    fusion = bound(name).train()
    x = inputs()
    x["audio"] = drop_sample(x["audio"], 2)  # the "missing" parameters get a gradient too
    leaves = [x["image"].pooled, x["image"].tokens]
    for t in leaves:
        t.requires_grad_(True)
    out = fusion(x)
    assert out.fused.shape == (4, 12) and torch.isfinite(out.fused).all()
    loss = out.fused.square().mean()
    if out.logits is not None:
        assert out.logits.shape == (4, C)
        loss = loss + out.logits.logsumexp(-1).mean()
    loss.backward()
    for pname, p in fusion.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    grads = [t.grad for t in leaves if t.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_a_missing_modality_is_the_image_alone(name: str) -> None:
    """Audio missing for sample 2 (its values NaN): that sample's output is what the strategy
    gives for the image alone (the audio key absent), and no other sample changes."""
    fusion = bound(name).eval()
    x = inputs()
    full = fusion(x)
    x_missing = {**x, "audio": drop_sample(x["audio"], 2)}
    out = fusion(x_missing)
    image_only = fusion({"image": x["image"]})
    assert torch.isfinite(out.fused).all()
    torch.testing.assert_close(out.fused[2], image_only.fused[2], atol=1e-6, rtol=0)
    others = [0, 1, 3]
    torch.testing.assert_close(out.fused[others], full.fused[others], atol=1e-6, rtol=0)
    if out.logits is not None:
        torch.testing.assert_close(out.logits[2], image_only.logits[2], atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_padding_does_not_change_the_output(name: str) -> None:
    fusion = bound(name).eval()
    x = inputs()
    a = x["audio"]
    extra = 5
    padded = EncoderOutput(
        tokens=torch.cat([a.tokens, torch.full((4, extra, D), float("nan"))], dim=1),
        mask=torch.cat([a.mask, torch.zeros(4, extra, dtype=torch.bool)], dim=1),
        pooled=a.pooled,
    )
    # Sample 1's padding (after 3 tokens) also holds garbage.
    padded.tokens[1, 3:] = 1e4
    torch.testing.assert_close(
        fusion({**x, "audio": padded}).fused, fusion(x).fused, atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_order_of_the_input_dict_does_not_matter(name: str) -> None:
    fusion = bound(name).eval()
    x = inputs()
    swapped = {"audio": x["audio"], "image": x["image"]}
    torch.testing.assert_close(fusion(swapped).fused, fusion(x).fused)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_a_sample_with_no_modality_is_finite(name: str) -> None:
    fusion = bound(name).eval()
    x = inputs()
    x = {"image": drop_sample(x["image"], 0), "audio": drop_sample(x["audio"], 0)}
    out = fusion(x)
    assert torch.isfinite(out.fused).all()
    if out.weights is not None:
        assert all(float(w[0]) == 0.0 for w in out.weights.values())
    if out.logits is not None:
        assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("name", sorted(WEIGHTED))
def test_weights_are_a_distribution_over_present_modalities(name: str) -> None:
    fusion = bound(name).eval()
    x = inputs(b=6)
    x["audio"] = drop_sample(x["audio"], 2)
    x["image"] = drop_sample(x["image"], 4)
    w = fusion(x).weights
    assert w is not None and set(w) == {"image", "audio"}
    assert float(w["audio"][2]) == 0.0 and float(w["image"][4]) == 0.0
    assert float(w["image"][2]) == pytest.approx(1.0) and float(w["audio"][4]) == pytest.approx(1.0)
    total = w["image"] + w["audio"]
    torch.testing.assert_close(total, torch.ones(6))
    for v in w.values():
        assert ((v >= 0) & (v <= 1)).all()


def test_weighted_mixes_the_single_modality_outputs() -> None:
    fusion = bound("weighted").eval()
    x = inputs()
    both = fusion(x)
    image, audio = fusion({"image": x["image"]}), fusion({"audio": x["audio"]})
    w = both.weights
    mix = w["image"][:, None] * image.fused + w["audio"][:, None] * audio.fused
    torch.testing.assert_close(both.fused, mix, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["late_mean", "late_learned"])
def test_late_fusion_combines_the_heads_logits(name: str) -> None:
    fusion = bound(name).eval()
    x = inputs()
    both = fusion(x)
    image, audio = fusion({"image": x["image"]}), fusion({"audio": x["audio"]})
    w = both.weights
    if name == "late_mean":
        torch.testing.assert_close(w["image"], torch.full((4,), 0.5))
    mix = w["image"][:, None] * image.logits + w["audio"][:, None] * audio.logits
    torch.testing.assert_close(both.logits, mix, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["concat", "gated", "tensor"])
def test_missing_is_not_zero_filling(name: str) -> None:
    """An absent modality is not the same as a present one whose vector is zeros."""
    fusion = bound(name).eval()
    x = inputs()
    missing = fusion({**x, "audio": drop_sample(x["audio"], 0)}).fused[0]
    a = x["audio"]
    zeros = EncoderOutput(
        tokens=torch.zeros_like(a.tokens), mask=a.mask, pooled=torch.zeros_like(a.pooled)
    )
    assert not torch.allclose(missing, fusion({**x, "audio": zeros}).fused[0])


def test_bind_contract() -> None:
    fusion = WeightedFusion(out_dim=8)
    with pytest.raises(RuntimeError, match="bind"):
        fusion(inputs())
    fusion.bind(DIMS, C)
    params = [id(p) for p in fusion.parameters()]
    fusion.bind(dict(DIMS), C)  # the same shapes: nothing happens
    assert [id(p) for p in fusion.parameters()] == params
    with pytest.raises(RuntimeError, match="already bound"):
        fusion.bind({"image": 4}, C)
    with pytest.raises(KeyError, match="text"):
        fusion({**inputs(), "text": inputs()["image"]})
    narrow = WeightedFusion()
    narrow.bind({"image": 3}, C)
    with pytest.raises(ValueError, match="pooled width of 'image'"):
        narrow({"image": inputs()["image"]})
    with pytest.raises(ValueError, match="'.'"):
        ConcatFusion().bind({"a.b": 3}, C)


@pytest.mark.parametrize("name", ["cross", "graph"])
def test_token_width_is_checked_and_can_differ(name: str) -> None:
    x = inputs()
    wide = EncoderOutput(
        tokens=torch.randn(4, 4, 24), mask=x["image"].mask, pooled=x["image"].pooled
    )
    fusion = bound(name)
    with pytest.raises(ValueError, match="tokens of 'image' are 24 wide"):
        fusion({**x, "image": wide})
    torch.manual_seed(0)
    fusion = STRATEGIES[name]()
    fusion.bind(DIMS, C, token_dims={"image": 24})
    assert fusion({**x, "image": wide}).fused.shape == (4, 12)


def test_segment_means() -> None:
    tokens = torch.arange(6.0).view(1, 6, 1).repeat(2, 1, 1)
    mask = torch.tensor([[True] * 6, [True, True, False, False, False, False]])
    means, valid = segment_means(tokens, mask, 3)
    assert valid.tolist() == [[True, True, True], [True, True, False]]
    assert means[0, :, 0].tolist() == [0.5, 2.5, 4.5]
    assert means[1, :2, 0].tolist() == [0.0, 1.0]


@pytest.mark.skipif(not pyg_available(), reason="torch_geometric is not installed")
def test_graph_backends_agree() -> None:
    pyg = bound("graph").eval()
    plain = bound("graph_torch").eval()
    assert pyg.backend_used == "pyg" and plain.backend_used == "torch"
    plain.load_state_dict(pyg.state_dict())  # same parameter names: checkpoints move
    x = inputs()
    x["audio"] = drop_sample(x["audio"], 2)
    torch.testing.assert_close(plain(x).fused, pyg(x).fused, atol=1e-5, rtol=0)


# -- modality dropout --------------------------------------------------------------------------


def test_modality_dropout_only_in_training() -> None:
    drop = ModalityDropout(p=1.0).eval()
    x = inputs()
    assert drop(x) is x


@pytest.mark.parametrize("min_keep", [0, 1, 2, 3])
def test_modality_dropout_keeps_min_keep(min_keep: int) -> None:
    torch.manual_seed(0)
    drop = ModalityDropout(p=1.0, min_keep=min_keep).train()
    x = inputs(b=64)
    x["audio"] = drop_sample(x["audio"], 5, garbage=0.0)  # has only the image
    out = drop(x)
    kept = torch.stack([out[m].mask.any(1) for m in ("image", "audio")], dim=1).sum(1)
    had = torch.tensor([1 if i == 5 else 2 for i in range(64)])
    assert torch.equal(kept, torch.minimum(had, torch.tensor(min_keep)))
    for m in x:  # values untouched; padding stays padding
        assert out[m].tokens is x[m].tokens and out[m].pooled is x[m].pooled
        assert not (out[m].mask & ~x[m].mask).any()


def test_modality_dropout_rate_and_choice() -> None:
    torch.manual_seed(0)
    drop = ModalityDropout(p=0.3, min_keep=1).train()
    x = inputs(b=4000)
    x["audio"] = replace(x["audio"], mask=torch.ones(4000, 6, dtype=torch.bool))
    out = drop(x)
    dropped = {m: 1 - out[m].mask.any(1).float().mean().item() for m in x}
    # Both dropped with prob p^2 = 0.09; one of the two is then kept: each loses ~0.3 - 0.045.
    for rate in dropped.values():
        assert 0.22 < rate < 0.29
    assert (torch.stack([out[m].mask.any(1) for m in x]).sum(0) >= 1).all()
    with pytest.raises(ValueError):
        ModalityDropout(p=1.5)


# -- Classify with two encoders ----------------------------------------------------------------


def batch(b: int = 6, frames: int = 24, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, frames, dtype=torch.bool)
    mask[0, frames // 2 :] = False
    return {
        "image": torch.randn(b, 1, 8, 8, generator=g),
        "audio": torch.randn(b, 40, frames, generator=g).masked_fill(~mask[:, None], 0.0),
        "audio_mask": mask,
        "label": torch.randint(0, C, (b,), generator=g),
    }


def classifier(name: str, image: str = "resnet") -> Classify:
    torch.manual_seed(0)
    image_encoder = (
        ResNetCNN(in_channels=1, image_size=8, widths=[4, 8], dim=D, dropout=0.0)
        if image == "resnet"
        else SmallViT(in_channels=1, image_size=8, patch_size=4, dim=D, layers=1, heads=2)
    )
    encoders = {
        "image": image_encoder,
        "audio": AudioCNN(n_mels=40, dim=D, channels=[4, 8]),
    }
    return Classify(
        encoders=encoders,
        fusion=STRATEGIES[name](),
        num_classes=C,
        modality_dropout=ModalityDropout(p=0.5),
    )


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_classify_trains_through_each_fusion(name: str) -> None:
    model = classifier(name, image="vit" if name == "cross" else "resnet")
    assert (model.head is None) == (name.startswith("late"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)  # parameters exist already
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    loss = model.training_step(batch(), 0)
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("fusion.") for k in changed)
    assert any(k.startswith("encoders.audio.") for k in changed)
    model.eval()
    b = batch()
    with torch.no_grad():
        image_only = model({"image": b["image"], "label": b["label"]})
    assert image_only.shape == (6, C) and torch.isfinite(image_only).all()


def test_classify_reports_mean_modality_weights(tmp_path) -> None:
    model = classifier("weighted")
    data = [{k: v[i] for k, v in batch(b=8, seed=s).items()} for s in range(2) for i in range(8)]
    loader = DataLoader(data, batch_size=8)
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, train_dataloaders=loader, val_dataloaders=loader)
    assert "modality_weights" not in model.eval_results["val"]
    trainer.test(model, dataloaders=loader, verbose=False)
    weights = model.eval_results["test"]["modality_weights"]
    assert set(weights) == {"image", "audio"}
    assert sum(weights.values()) == pytest.approx(1.0, abs=1e-5)


def test_classify_rejects_modality_dropout_without_fusion() -> None:
    with pytest.raises(ValueError, match="fusion"):
        Classify(
            encoders={"audio": AudioCNN(dim=D, channels=[4])},
            modality_dropout=ModalityDropout(),
        )

"""Contrastive pretraining: InfoNCE, retrieval recall, learned temperature, and a classifier
initialized from the pretrained encoders (linear probe, fine-tuning)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from longmm.encoders import ArticleCNN
from longmm.errors import CheckpointError, DataError
from longmm.runs import save_weights
from longmm.tasks.classify import Classify
from longmm.tasks.contrastive import (
    Contrastive,
    class_recall_at_k,
    info_nce,
    recall_at_k,
    retrieval_ranks,
)

D = 16


def test_info_nce_equals_a_hand_computation_on_three_pairs() -> None:
    a = F.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]), dim=-1)
    b = F.normalize(torch.tensor([[0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]]), dim=-1)
    scale = 2.0
    sim = [[sum(x * y for x, y in zip(a[i].tolist(), b[j].tolist(), strict=True)) for j in range(3)]
           for i in range(3)]  # fmt: skip

    def ce(row: list[float], target: int) -> float:
        return -scale * row[target] + math.log(sum(math.exp(scale * v) for v in row))

    a_to_b = sum(ce(sim[i], i) for i in range(3)) / 3
    b_to_a = sum(ce([sim[j][i] for j in range(3)], i) for i in range(3)) / 3
    assert float(info_nce(a, b, scale)) == pytest.approx((a_to_b + b_to_a) / 2, rel=1e-6)


def test_retrieval_recall_on_a_known_similarity_matrix() -> None:
    # Unit vectors at known angles (radians); query i's positive is key i.
    angles = torch.tensor([0.0, 1.0, 2.0, 3.0])
    keys = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    queries = torch.stack([keys[0], torch.tensor([math.cos(0.4), math.sin(0.4)]), keys[0], keys[3]])
    ranks = retrieval_ranks(queries, keys, chunk=3)
    # q1 at 0.4 rad: key 0 (0.4 away) beats key 1 (0.6 away); q2 = key 0 direction: key 0
    # and key 1 beat key 2.
    assert ranks.tolist() == [0, 1, 2, 0]
    assert recall_at_k(ranks, [1, 2, 5]) == {"r@1": 0.5, "r@2": 0.75, "r@5": 1.0}
    # Ties count against the query: a key as close as the positive is ranked ahead of it.
    same = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert retrieval_ranks(same, same).tolist() == [1, 1]
    labels = torch.tensor([0, 0, 1, 1])
    assert class_recall_at_k(queries, keys, labels, [1, 2]) == {
        "class_r@1": 0.75,
        "class_r@2": 0.75,
    }


def test_learned_temperature_is_clamped_and_trains(av_encoders, av_batch) -> None:
    model = Contrastive(av_encoders(D), proj_dim=8, temperature=0.1, min_temperature=0.05)
    assert model.temperature == pytest.approx(0.1, rel=1e-5)
    b = av_batch(16)
    loss = model.training_step(b, 0)
    loss.backward()
    assert model.log_scale.grad is not None and model.log_scale.grad != 0
    with torch.no_grad():
        model.log_scale.fill_(10.0)  # temperature 4.5e-5, below the floor
    assert model.temperature == pytest.approx(0.05, rel=1e-5)
    model.on_train_batch_end(None, b, 0)
    assert float(model.log_scale) == pytest.approx(math.log(1 / 0.05), rel=1e-6)
    frozen = Contrastive(av_encoders(D), learn_temperature=False)
    assert not frozen.log_scale.requires_grad


def test_missing_pairs_are_left_out_and_a_missing_modality_is_named(av_encoders, av_batch) -> None:
    model = Contrastive(av_encoders(D), proj_dim=8).eval()
    b = av_batch(6)
    b["audio_mask"][2] = False  # sample 2 has no audio
    _, _, both = model.embed(b)
    assert both.tolist() == [True, True, False, True, True, True]
    with pytest.raises(DataError, match="audio"):
        model.embed({"image": b["image"]})
    with pytest.raises(ValueError, match="two different"):
        Contrastive(av_encoders(D), modalities=["image", "image"])
    assert (model.monitor, model.monitor_mode) == ("val/r@1", "max")
    by_loss = Contrastive(av_encoders(D), monitor="val/loss")
    assert (by_loss.monitor, by_loss.monitor_mode) == ("val/loss", "min")
    with pytest.raises(ValueError, match="monitor"):
        Contrastive(av_encoders(D), monitor="train/loss")


def test_fit_reports_retrieval_over_the_split(av_encoders, av_pairs, cpu_trainer) -> None:
    model = Contrastive(av_encoders(D), proj_dim=8, ks=[1, 5, 10])
    loader = DataLoader(av_pairs(40), batch_size=16)
    t = cpu_trainer(max_epochs=1)
    t.fit(model, loader, loader)
    assert model.monitor == "val/r@1" and "val/r@1" in t.callback_metrics
    t.test(model, loader, verbose=False)
    test = model.eval_results["test"]
    assert test["count"] == 40
    for direction in ("image_to_audio", "audio_to_image"):
        row = test[direction]
        assert 0.0 <= row["r@1"] <= row["r@5"] <= row["r@10"] <= 1.0
        assert row["r@1"] <= row["class_r@1"]
    assert test["r@1"] == pytest.approx(
        (test["image_to_audio"]["r@1"] + test["audio_to_image"]["r@1"]) / 2, abs=1e-6
    )


def test_classify_starts_from_contrastive_encoders_and_freezes(
    tmp_path: Path, av_encoders, av_batch
) -> None:
    pretrained = Contrastive(av_encoders(D), proj_dim=8)
    with torch.no_grad():
        for p in pretrained.parameters():
            p.add_(0.01)
    weights = tmp_path / "pre" / "checkpoints" / "best.safetensors"
    save_weights(pretrained.state_dict(), weights)

    torch.manual_seed(1)
    probe = Classify(
        {"image": ArticleCNN(image_size=8, dim=D)},
        num_classes=3,
        init_from=str(tmp_path / "pre"),
        freeze_encoders=True,
    )
    probe.setup("fit")
    for k, v in pretrained.encoders["image"].state_dict().items():
        assert torch.equal(probe.encoders["image"].state_dict()[k], v), k
    # Linear probe: only the head trains; the encoder stays in eval mode.
    optimizer = torch.optim.SGD([p for p in probe.parameters() if p.requires_grad], lr=0.1)
    probe.train()
    assert not probe.encoders.training and probe.head.training
    before = {k: v.clone() for k, v in probe.state_dict().items()}
    b = av_batch(8)
    probe.training_step(b, 0).backward()
    optimizer.step()
    changed = {k for k, v in probe.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("head.") for k in changed)

    # Fine-tuning: the same start, everything trains.
    tune = Classify(
        {"image": ArticleCNN(image_size=8, dim=D)}, num_classes=3, init_from=str(weights)
    )
    assert tune.load_pretrained_encoders() == ["image"]
    tune.train()
    assert tune.encoders.training and all(p.requires_grad for p in tune.parameters())

    wrong = Classify({"image": ArticleCNN(image_size=8, dim=D * 2)}, init_from=str(weights))
    with pytest.raises(CheckpointError, match="shape mismatch"):
        wrong.load_pretrained_encoders()
    other = Classify({"text": ArticleCNN(image_size=8, dim=D)}, init_from=str(weights))
    with pytest.raises(CheckpointError, match="no encoder"):
        other.load_pretrained_encoders()
    with pytest.raises(CheckpointError, match="not found"):
        Classify({"image": ArticleCNN(image_size=8)}, init_from=str(tmp_path)).setup("fit")


def test_pretrain_then_probe_recipes(tmp_path: Path, fit_recipe) -> None:
    pre = tmp_path / "pre"
    metrics = fit_recipe("contrastive_av_digits.yaml", pre)
    assert 0.0 <= metrics["test"]["image_to_audio"]["r@1"] <= 1.0
    init = ["--model.init_args.init_from", str(pre)]
    metrics = fit_recipe("probe_av_digits.yaml", tmp_path / "probe", *init)
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0


@pytest.mark.slow
@pytest.mark.needs_shared
def test_real_pretrain_then_probe_recipes(tmp_path: Path, fit_recipe) -> None:
    pre = tmp_path / "pre"
    metrics = fit_recipe("contrastive_av_mnist_fsdd.yaml", pre, from_repo=True)
    assert metrics["test"]["count"] == 128  # 1 batch
    init = ["--model.init_args.init_from", str(pre)]
    metrics = fit_recipe("probe_av_mnist_fsdd.yaml", tmp_path / "probe", *init, from_repo=True)
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0

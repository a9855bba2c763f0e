"""Per-modality attribution with integrated gradients, and the Classify artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from longmm.encoders import ArticleCNN, AudioCNN
from longmm.evaluation.attribution import (
    attribution_section,
    modality_attributions,
    modality_shares,
    plot_attribution,
)
from longmm.fusion import WeightedFusion
from longmm.tasks.classify import Classify


def batch(n: int = 6, seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, 10, dtype=torch.bool)
    mask[0, 6:] = False
    return {
        "image": torch.randn(n, 1, 8, 8, generator=g),
        "audio": torch.randn(n, 40, 10, generator=g).masked_fill(~mask[:, None], 0.0),
        "audio_mask": mask,
        "label": torch.randint(0, 3, (n,), generator=g),
    }


class Linear2(nn.Module):
    """Logits linear in both inputs: integrated gradients are exact, and a modality's
    attribution is its weight times its input."""

    def __init__(self, audio_gain: float) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.image = nn.Linear(64, 3)
        self.audio = nn.Linear(400, 3, bias=False)
        self.audio_gain = audio_gain

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        audio = batch["audio"] * batch["audio_mask"][:, None]
        return self.image(batch["image"].flatten(1)) + self.audio_gain * self.audio(
            audio.flatten(1)
        )


def test_shares_sum_to_one_and_ignore_padding() -> None:
    attrs = {"image": torch.tensor([[1.0, -1.0], [0.0, 0.0]]), "audio": torch.ones(2, 3, 4)}
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    shares = modality_shares(attrs, {"audio": mask})
    assert shares[0].tolist() == pytest.approx([2 / 8, 6 / 8])  # 2 real frames x 3 bins
    assert shares[1].tolist() == pytest.approx([0.0, 1.0])
    empty = modality_shares({"image": torch.zeros(1, 2), "audio": torch.zeros(1, 2)}, {})
    assert empty.isnan().all()


def test_a_modality_the_model_ignores_gets_no_share() -> None:
    result = modality_attributions(Linear2(audio_gain=0.0), [batch()], ["image", "audio"])
    assert result.shares == {"image": 1.0, "audio": 0.0}
    assert result.samples == 6
    both = modality_attributions(
        Linear2(audio_gain=1.0), [batch(), batch(seed=1)], ["image", "audio"]
    )
    assert sum(both.shares.values()) == pytest.approx(1.0, abs=1e-6)
    assert 0 < both.shares["audio"] < 1 and both.samples == 12
    assert both.relative_delta < 1e-3  # linear model: the integral is exact
    capped = modality_attributions(Linear2(1.0), [batch(), batch(seed=1)], ["image", "audio"], 8)
    assert capped.samples == 8


def test_integer_inputs_are_skipped_with_a_reason() -> None:
    b = batch()
    b["text"] = torch.randint(0, 10, (6, 5))
    result = modality_attributions(Linear2(1.0), [b], ["image", "audio", "text"])
    assert set(result.shares) == {"image", "audio"}
    assert "integer" in result.skipped["text"]


def test_classify_writes_the_plot_json_and_report_section(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Classify(
        {
            "image": ArticleCNN(image_size=8, dim=8),
            "audio": AudioCNN(n_mels=40, dim=8, channels=[4, 8]),
        },
        fusion=WeightedFusion(out_dim=8),
        num_classes=3,
        attribution_steps=8,
    )
    model.eval_results["test"] = {"modality_weights": {"image": 0.4, "audio": 0.6}}
    plots = model.write_attribution(tmp_path, [batch(), batch(seed=1)], max_samples=10)
    assert plots == ["plots/attribution.png"]
    assert (tmp_path / "plots" / "attribution.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "attribution.json").read_text())
    assert saved["samples"] == 10 and saved["steps"] == 8
    assert sum(saved["shares"].values()) == pytest.approx(1.0, abs=1e-5)
    assert saved["fusion_weights"] == {"image": 0.4, "audio": 0.6}
    section = (tmp_path / "attribution.md").read_text()
    assert "| audio |" in section and "0.600" in section
    assert model.report_sections == [section]
    assert model.training  # restored after the pass in eval mode

    single = Classify({"image": ArticleCNN(image_size=8, dim=8)}, num_classes=3)
    assert single.write_artifacts(tmp_path) == []


def test_plot_without_fusion_weights(tmp_path: Path) -> None:
    plot_attribution({"image": 0.3, "audio": 0.7}, None, tmp_path / "a.png")
    assert (tmp_path / "a.png").is_file()
    from longmm.evaluation.attribution import AttributionResult

    text = attribution_section(AttributionResult({"image": 0.3, "audio": 0.7}, 5, 8), None)
    assert "| image | 0.300 |  |" in text

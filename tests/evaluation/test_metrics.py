"""torchmetrics-based summary against scikit-learn on random predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from longmm.evaluation.metrics import ClassificationMetrics


@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 5, 400)
    preds = np.where(rng.random(400) < 0.6, target, rng.integers(0, 5, 400))
    m = ClassificationMetrics(5)
    for chunk in np.array_split(np.arange(400), 7):  # accumulated over batches
        m.update(torch.from_numpy(preds[chunk]), torch.from_numpy(target[chunk]))
    out = m.compute([f"c{i}" for i in range(5)])
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(target, preds))
    assert out["precision_macro"] == pytest.approx(
        skm.precision_score(target, preds, average="macro")
    )
    assert out["recall_macro"] == pytest.approx(skm.recall_score(target, preds, average="macro"))
    assert out["f1_macro"] == pytest.approx(skm.f1_score(target, preds, average="macro"))
    assert out["f1_micro"] == pytest.approx(skm.f1_score(target, preds, average="micro"))
    assert out["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(target, preds))
    assert out["confusion_matrix"] == skm.confusion_matrix(target, preds).tolist()
    f1 = skm.f1_score(target, preds, average=None)
    assert [out["per_class"][f"c{i}"]["f1"] for i in range(5)] == pytest.approx(f1)
    assert out["per_class"]["c0"]["support"] == int((target == 0).sum())


def test_scores_are_argmaxed_and_absent_classes_ignored_in_balanced_accuracy() -> None:
    m = ClassificationMetrics(3)
    scores = torch.tensor([[2.0, 0.1, 0.0], [0.0, 3.0, 0.1], [0.0, 3.0, 0.1]])
    m.update(scores, torch.tensor([0, 1, 0]))
    out = m.compute()
    assert out["accuracy"] == pytest.approx(2 / 3)
    assert out["balanced_accuracy"] == pytest.approx(0.75)  # class 2 has no samples

"""Bring-your-own question-passage models: local Hugging Face cross-encoder and extractive QA
folders (tiny random ones built here), on torch and ONNX Runtime, and clear errors for a
folder that is not such a model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from longmm.errors import DataError
from longmm.reading.answer import Evidence
from longmm.reading.answer.qa_model import AnswerModel
from longmm.reading.retrieve.rerank import CrossEncoder

TEXTS = ["The pass key is 41234.", "Gulls nested on the cliff.", "Nothing else happened that day."]


def test_a_cross_encoder_folder_scores_on_torch_and_onnx(tiny_bert, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LONGMM_CACHE", str(tmp_path / "cache"))
    folder = tiny_bert("rerank")
    torch_scores = CrossEncoder(folder, backend="torch").score("What is the pass key?", TEXTS)
    onnx_scores = CrossEncoder(folder, backend="onnx").score("What is the pass key?", TEXTS)
    assert torch_scores.shape == (3,)
    np.testing.assert_allclose(onnx_scores, torch_scores, atol=1e-4)
    int8 = CrossEncoder(folder, backend="onnx-int8").score("What is the pass key?", TEXTS)
    assert int8.shape == (3,) and np.isfinite(int8).all()


def test_a_qa_folder_answers_with_a_span_of_the_evidence(tiny_bert) -> None:
    model = AnswerModel(tiny_bert("qa"), backend="torch", threshold=float("-inf"))
    passages = [Evidence(t, "doc", 100 * i, 100 * i + len(t)) for i, t in enumerate(TEXTS)]
    span = model.extract("What is the pass key?", passages)
    assert span is not None
    ev = passages[span.evidence]
    assert ev.text[span.start - ev.start : span.end - ev.start] == span.text
    assert (
        AnswerModel(tiny_bert("qa"), backend="torch", threshold=1e9).extract(
            "What is the pass key?", passages
        )
        is None
    )  # nothing beats an impossible threshold: the reader falls back to a sentence


def test_wrong_folders_get_errors_that_say_what_is_missing(tiny_bert, tmp_path) -> None:
    with pytest.raises(DataError, match="no such file or folder"):
        CrossEncoder(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no config.json"):
        CrossEncoder(empty)
    with pytest.raises(DataError, match=r"BertModel.*ForSequenceClassification"):
        CrossEncoder(tiny_bert("base"))  # an encoder without a relevance head
    with pytest.raises(DataError, match=r"ForQuestionAnswering"):
        AnswerModel(tiny_bert("rerank"))  # a cross-encoder is not a QA model
    no_tokenizer = tmp_path / "no_tok"
    shutil.copytree(tiny_bert("rerank"), no_tokenizer)
    (no_tokenizer / "tokenizer.json").unlink()
    with pytest.raises(DataError, match="tokenizer.json"):
        CrossEncoder(no_tokenizer)
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(
        json.dumps({"architectures": ["BertForQuestionAnswering"]})
    )
    with pytest.raises(DataError, match="no weights"):
        AnswerModel(no_weights)
    with pytest.raises(DataError, match="not a longmm adapter file"):
        junk = tmp_path / "junk.safetensors"
        from safetensors.numpy import save_file

        save_file({"x": np.zeros(2, dtype=np.float32)}, str(junk))
        AnswerModel(junk)


def test_the_packaged_models_load_offline() -> None:
    ce = CrossEncoder(backend="torch")
    scores = ce.score("What is the pass key?", TEXTS)
    assert int(np.argmax(scores)) == 0  # the trained re-ranker knows which passage answers
    model = AnswerModel(backend="torch")
    text = "The landlord repairs the heating, the boiler and the roof."
    span = model.read("Who repairs the heating?", [Evidence(text, "doc", 0, len(text))])
    assert span.text == "The landlord"
    for weights in (ce.weights, model.weights):  # adapters and heads only, not a model
        assert Path(weights).stat().st_size < 3_000_000

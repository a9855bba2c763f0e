"""The span head's task on a tiny config: a short training, its metrics, the head file it
writes, and that file as the retrieval reader's extractor."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from longmm.data.span_data import SpanData
from longmm.reading.answer import AnswerExtractor, Evidence
from longmm.reading.answer.span_head import SpanExtractor, load_span_head
from longmm.tasks.span_head import SpanExtraction


def test_tiny_training_and_extractor(tmp_path: Path) -> None:
    L.seed_everything(0)
    data = SpanData(train=48, val=16, test=16, max_words=25, max_length=96, batch_size=16)
    model = SpanExtraction(dim=32, heads=2, layers=1, lr=3e-3)
    trainer = L.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=data)
    trainer.test(model, datamodule=data, verbose=False)
    results = model.eval_results["test"]
    assert set(results) >= {"accuracy", "no_answer_accuracy", "answer_token_f1"}
    assert 0.0 <= results["accuracy"] <= 1.0 and results["examples"] == 16
    model.write_artifacts(tmp_path)
    head = load_span_head(tmp_path / "span_head.safetensors")
    assert sum(p.numel() for p in head.parameters()) == sum(
        p.numel() for p in model.head.parameters()
    )
    extractor = SpanExtractor(weights=tmp_path / "span_head.safetensors", max_length=64)
    assert isinstance(extractor, AnswerExtractor)
    text = "Here we go. The pass key is 52311. Remember it. The sky is blue. " * 3
    passages = [Evidence(text, "doc", 100, 100 + len(text)), Evidence("", "doc", 0, 0)]
    span = extractor.extract("What is the pass key?", passages)
    assert span is not None and span.evidence == 0
    assert span.text == text[span.start - 100 : span.end - 100]  # cites the document offsets
    assert extractor.extract("What is the pass key?", []) is None

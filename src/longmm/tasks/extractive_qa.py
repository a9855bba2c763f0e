"""The answer model's task: extractive QA in the SQuAD 2.0 style, LoRA-fine-tuned.

The model scores every token of ``[CLS] question [SEP] context piece [SEP]`` as the answer's
start and end (cross-entropy on both; ``[CLS]`` is the target when the piece holds no
answer). Evaluation decodes each question over all of its windows
(:func:`longmm.reading.answer.qa_model.decode`), calibrates the "no answer" threshold on the
validation split (the one that maximises F1 there) and applies that threshold to the test
split. Reported: exact match and token F1 (SQuAD's normalisation, best over the reference
answers; "no answer" right when there is none), on answerable and unanswerable questions
apart. The run folder gets ``answer_qa.safetensors`` (adapters + head + the threshold).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from longmm.evaluation.answers import best_over, exact_match, token_f1
from longmm.reading.answer.qa_model import best_threshold, decode
from longmm.tasks.common import SpanSteps
from longmm.tasks.rerank import AdaptedTask


class ExtractiveQA(SpanSteps, AdaptedTask):
    monitor = "val/f1"
    monitor_mode = "max"
    head_kind = "qa"

    def __init__(self, max_answer_tokens: int = 30, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.save_recipe_hyperparameters()
        self.max_answer_tokens = max_answer_tokens
        self.null_threshold = 0.0
        self._logits: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = {}

    def logits(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        out = self.net(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
        )
        pad = batch["attention_mask"] == 0
        return (
            out.start_logits.masked_fill(pad, float("-inf")),
            out.end_logits.masked_fill(pad, float("-inf")),
        )

    def _eval_step(self, batch: dict[str, Tensor], stage: str) -> None:
        loss, start, end = self._loss(batch)
        self.log(f"{stage}/loss", loss, batch_size=len(start))
        store = self._logits.setdefault(stage, {})
        lengths = batch["attention_mask"].sum(1).tolist()
        for row, w in enumerate(batch["window"].tolist()):
            n = lengths[row]
            store[w] = (
                start[row, :n].float().cpu().numpy(),
                end[row, :n].float().cpu().numpy(),
            )

    def _eval_end(self, stage: str) -> None:
        store = self._logits.pop(stage, {})
        dm = getattr(self.trainer, "datamodule", None)
        if not store or dm is None:
            return
        dataset = dm.datasets[stage]
        by_example: dict[int, list[int]] = {}
        for w in sorted(store):
            by_example.setdefault(dataset.windows[w].example, []).append(w)
        margins, answerable, f1s, ems, texts = [], [], [], [], []
        for ex_index, ws in sorted(by_example.items()):
            ex = dataset.examples[ex_index]
            span = decode(
                [store[w][0] for w in ws],
                [store[w][1] for w in ws],
                [dataset.windows[w].offsets for w in ws],
                [dataset.windows[w].context_from for w in ws],
                self.max_answer_tokens,
            )
            text = ex.context[span.start : span.end] if span else ""
            refs = [t for t, _ in ex.answers]
            margins.append(span.margin if span else float("-inf"))
            answerable.append(bool(refs))
            texts.append(text)
            f1s.append(best_over(token_f1, text, refs) if refs else 0.0)
            ems.append(best_over(exact_match, text, refs) if refs else 0.0)
        if stage == "val":
            self.null_threshold, _ = best_threshold(margins, answerable, f1s)
        results = qa_scores(margins, answerable, f1s, ems, self.null_threshold)
        results["null_threshold"] = round(self.null_threshold, 4)
        at_zero = qa_scores(margins, answerable, f1s, ems, 0.0)
        results["f1_threshold0"] = at_zero["f1"]
        self.eval_results[stage] = results
        for key in ("f1", "exact_match"):
            self.log(f"{stage}/{key}", float(results[key]), prog_bar=key == "f1")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["null_threshold"] = self.null_threshold

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.null_threshold = float(checkpoint.get("null_threshold", 0.0))

    def write_artifacts(self, run: Path) -> list[str]:
        """``answer_qa.safetensors``: adapters, head, window sizes and the threshold."""
        dm = getattr(self.trainer, "datamodule", None)
        meta = {
            "null_threshold": self.null_threshold,
            "max_answer_tokens": self.max_answer_tokens,
            "max_length": getattr(dm, "max_length", 256),
            "stride": getattr(dm, "stride", 96),
        }
        self.save_adapter(Path(run) / "answer_qa.safetensors", meta)
        return []


def qa_scores(
    margins: list[float],
    answerable: list[bool],
    f1s: list[float],
    ems: list[float],
    threshold: float,
) -> dict[str, Any]:
    """EM and F1 (in %) when questions are answered only above ``threshold``."""
    n = max(len(margins), 1)
    f1 = em = 0.0
    has = [0.0, 0.0, 0]
    no = [0.0, 0]
    for m, a, f, e in zip(margins, answerable, f1s, ems, strict=True):
        answered = m > threshold
        if a:
            f_i, e_i = (f, e) if answered else (0.0, 0.0)
            has[0] += f_i
            has[1] += e_i
            has[2] += 1
        else:
            f_i = e_i = 0.0 if answered else 1.0
            no[0] += f_i
            no[1] += 1
        f1 += f_i
        em += e_i
    return {
        "f1": round(100 * f1 / n, 2),
        "exact_match": round(100 * em / n, 2),
        "answerable_f1": round(100 * has[0] / max(has[2], 1), 2),
        "answerable_exact_match": round(100 * has[1] / max(has[2], 1), 2),
        "no_answer_accuracy": round(100 * no[0] / max(no[1], 1), 2),
        "questions": len(margins),
        "answerable": has[2],
    }

"""The reading part of ``longmm quickstart``: a generated long multimodal document (text with
handwritten-digit figures), read by the multimodal retrieval reader, questions answered with
cited evidence."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from longmm.io import atomic_write_json, atomic_write_text


def quickstart_reading(
    out: str | Path, digits_run: str | Path | None = None, length: int = 16384
) -> dict[str, Any]:
    """Write a ``length``-token JSONL document with 8 figures and a pass key into ``out``,
    answer questions about two figures and about its text, and save ``answers.json``.
    ``digits_run`` (a ``longmm fit`` digits classifier run folder) reads the figures;
    ``None``: the packaged digit CNN."""
    from longmm.reading.multimodal import (
        AssetModel,
        MultimodalReader,
        export_asset_model,
        write_needle_document,
    )
    from longmm.reading.synth.needles import make_sample, score

    out = Path(out)
    t0 = time.perf_counter()
    sample = make_sample("mm_image", length, 0.6, seed=2026, num_figures=8)
    path = write_needle_document(sample, out / "document")
    # A pass key in the text, a third of the way in, for a question answered from the text.
    lines = path.read_text().splitlines()
    key = "71942"
    line = json.dumps({"text": f"The pass key is {key}. Remember it. {key} is the pass key."})
    lines.insert(len(lines) // 3, line)
    atomic_write_text(path, "\n".join(lines) + "\n")
    image_model = None
    if digits_run is not None:
        image_model = AssetModel.load(
            export_asset_model(digits_run, out / "digits_cnn.safetensors")
        )
    reader = MultimodalReader(strategy="hybrid", image_model=image_model)
    index = reader.index([path])
    other = max(sample.attachments, key=lambda a: a.position)  # the last figure
    questions = [
        (sample.question, list(sample.answers)),
        (f"What digit does {other.label.lower()} show?", [other.target]),
        ("What is the pass key?", [key]),
    ]
    rows = []
    for question, expected in questions:
        answer = reader.answer(question, index)
        best = answer.evidence[answer.span.evidence] if answer.span else None
        rows.append(
            {
                "question": question,
                "answer": answer.answer,
                "expected": expected,
                "correct": score(answer.answer, expected) == 1.0,
                "cited": None if best is None else {"start": best.start, "end": best.end},
                "seconds": round(answer.seconds, 3),
            }
        )
    result = {
        "document": str(path),
        "tokens": sample.tokens,
        "figures": len(sample.attachments),
        "index_seconds": round(index.seconds, 2),
        "answers": rows,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    atomic_write_json(out / "answers.json", result)
    return result


def print_reading(result: dict[str, Any]) -> None:
    print(
        f"\nread a {result['tokens']:,}-token document with {result['figures']} figures "
        f"({result['document']}) in {result['seconds']:.0f} s"
    )
    for row in result["answers"]:
        mark = "ok" if row["correct"] else f"expected {json.dumps(row['expected'])}"
        print(f"  Q: {row['question']:<36} A: {row['answer']!r:<12} ({mark})")

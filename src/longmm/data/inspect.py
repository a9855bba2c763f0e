"""``longmm data list`` and ``longmm data inspect PATH``."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from longmm.data.builtin import BUILTINS
from longmm.data.schema import Sample, SourceData, Waveform
from longmm.data.sources.base import sorted_classes


def list_sets() -> str:
    from longmm.data.sources import FORMATS

    lines = ["Embedded sets (no download; use as data.format):"]
    lines += [f"  {b.name:<14} {b.modality:<6} {b.description}" for b in BUILTINS.values()]
    lines += ["", "Source formats (data.root PATH, data.format NAME or auto):"]
    lines += [f"  {f.name:<14} {f.description}" for f in FORMATS]
    return "\n".join(lines)


def read_any(path: str, fmt: str = "auto", **options: Any) -> tuple[str, SourceData]:
    """Read a builtin set by name or a path in any format, skipping (and listing) bad items."""
    if path in BUILTINS:
        return path, BUILTINS[path].read()
    from longmm.data.sources import FORMATS, detect_format

    name = detect_format(path) if fmt == "auto" else fmt
    reader = {f.name: f.reader for f in FORMATS}[name]
    if name == "parallel":
        return name, reader(
            path, options.get("src_lang", "en"), options.get("tgt_lang", "de"), skip_bad=True
        )
    if name in ("table", "table-splits"):
        kw = {k: options[k] for k in ("text_column", "label_column") if options.get(k) is not None}
        return name, reader(path, skip_bad=True, **kw)
    return name, reader(path, skip_bad=True)


def _shape_summary(samples: list[Sample]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    images = [s.inputs["image"] for s in samples if "image" in s.inputs]
    if images:
        shapes = Counter(str(tuple(int(v) for v in img.shape)) for img in images)
        out["image_shapes"] = dict(shapes.most_common(5))
    clips = [s.inputs["audio"] for s in samples if isinstance(s.inputs.get("audio"), Waveform)]
    if clips:
        seconds = np.array([c.seconds for c in clips])
        out["audio_seconds"] = {
            "min": round(float(seconds.min()), 3),
            "median": round(float(np.median(seconds)), 3),
            "max": round(float(seconds.max()), 3),
        }
        out["audio_sample_rates"] = dict(Counter(c.sample_rate for c in clips))
    texts = [s.inputs["text"] for s in samples if isinstance(s.inputs.get("text"), str)]
    if texts:
        words = np.array([len(t.split()) for t in texts])
        out["text_words"] = {
            "min": int(words.min()),
            "median": float(np.median(words)),
            "max": int(words.max()),
        }
    targets = Counter(k for s in samples for k in s.targets)
    out["targets"] = dict(targets)
    return out


def inspect_data(
    path: str, fmt: str = "auto", max_classes: int = 50, **options: Any
) -> dict[str, Any]:
    name, data = read_any(path, fmt, **options)
    report: dict[str, Any] = {"path": path, "format": name, "description": data.description}
    report["splits"] = {}
    for split, samples in data.splits.items():
        labels = Counter(str(s.label) for s in samples if s.label is not None)
        report["splits"][split] = {
            "count": len(samples),
            "classes": len(labels),
            "per_class": {c: labels[c] for c in sorted_classes(labels)[:max_classes]},
            **_shape_summary(samples),
        }
    problems = [str(b) for b in data.skipped]
    if not data.has_own_splits:
        problems.append("note: no split of its own; train/val/test are made by a seeded split")
    empty = [s for s, items in data.splits.items() if not items]
    problems += [f"split {s!r} is empty" for s in empty]
    report["problems"] = problems
    report["bad_items"] = len(data.skipped)
    return report


def print_report(report: dict[str, Any]) -> None:
    print(f"{report['path']}  [{report['format']}]  {report['description']}")
    for split, info in report["splits"].items():
        print(f"  {split}: {info['count']} samples, {info['classes']} classes")
        if info["per_class"]:
            print("    per class: " + ", ".join(f"{k}={v}" for k, v in info["per_class"].items()))
        for key in ("image_shapes", "audio_seconds", "audio_sample_rates", "text_words", "targets"):
            if key in info:
                print(f"    {key}: {info[key]}")
    print(f"  problems ({report['bad_items']} bad items):")
    for line in report["problems"] or ["none"]:
        print(f"    {line}")

"""The adapter file our re-ranker and answer-model recipes write (no torch needed to read
its metadata): float16 safetensors of the LoRA adapters and trained heads, with metadata
``longmm="adapter"``, ``head`` (``rerank`` or ``qa``), ``lora`` (the peft ``LoraConfig``
arguments) and ``meta`` (window sizes, the calibrated "no answer" threshold, ...)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from longmm.errors import DataError


def adapter_metadata(head: str, lora: dict[str, Any], meta: dict[str, Any]) -> dict[str, str]:
    return {"longmm": "adapter", "head": head, "lora": json.dumps(lora), "meta": json.dumps(meta)}


def read_adapter_metadata(path: str | Path) -> dict[str, Any]:
    """``{"head", "lora", "meta"}`` of an adapter file; a clear error for anything else."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), "adapter file not found")
    try:
        with safe_open(str(path), "numpy") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise DataError(str(path), f"not a safetensors file ({exc})") from exc
    if meta.get("longmm") != "adapter" or meta.get("head") not in ("rerank", "qa"):
        raise DataError(str(path), "not a longmm adapter file (no 'head' metadata)")
    return {
        "head": meta["head"],
        "lora": json.loads(meta["lora"]),
        "meta": json.loads(meta.get("meta") or "{}"),
    }

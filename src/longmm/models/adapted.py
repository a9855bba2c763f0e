"""A pretrained BERT-like model with a task head, fine-tuned through LoRA adapters (peft).

The re-ranker (a cross-encoder: one relevance score for ``[CLS] question [SEP] passage [SEP]``)
and the answer model (start and end scores per token, ``[CLS]`` for "no answer") are the
packaged all-MiniLM-L6-v2 with a Hugging Face head (``AutoModelForSequenceClassification``
with one label, ``AutoModelForQuestionAnswering``). Training touches only low-rank adapters on
the top ``layers`` transformer layers and the head (and the pooler for the cross-encoder):
the layers below are frozen, so back-propagation stops above them (about twice as fast on a
CPU as full fine-tuning), and what a run ships is small: :func:`save_adapter` writes the
adapters and heads in float16 with the recipe of the model as metadata (about 1.5 MB);
:func:`load_adapted` rebuilds the base model, loads them and merges them into its weights,
so inference runs a plain Hugging Face model (and its ONNX export) at full speed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from longmm.errors import DataError
from longmm.reading.adapter_file import adapter_metadata, read_adapter_metadata

Head = Literal["rerank", "qa"]
HEADS: dict[str, tuple[str, list[str]]] = {
    # head -> (transformers auto class, modules trained whole beside the adapters)
    "rerank": ("AutoModelForSequenceClassification", ["classifier", "pooler"]),
    "qa": ("AutoModelForQuestionAnswering", ["qa_outputs"]),
}
TARGETS = ["query", "key", "value", "dense"]  # every linear layer of a BERT block


def base_model(head: Head, path: str | None = None) -> nn.Module:
    """The Hugging Face model with a fresh ``head`` over a local BERT-like folder (``None``:
    the packaged MiniLM); never downloads."""
    import transformers
    from transformers.utils import logging as hf_logging

    from longmm.reading.enhance import model_folder

    folder = model_folder(path)
    if not (folder / "config.json").is_file():
        raise DataError(str(folder), "not a Hugging Face model folder (no config.json)")
    auto = getattr(transformers, HEADS[head][0])
    kwargs: dict[str, Any] = {"num_labels": 1 if head == "rerank" else 2}
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized head" is what we want here
    hf_logging.disable_progress_bar()
    try:
        return auto.from_pretrained(str(folder), local_files_only=True, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)


def n_layers(model: nn.Module) -> int:
    return int(model.config.num_hidden_layers)


def lora_config(head: Head, rank: int, alpha: float, layers: int, total: int) -> dict[str, Any]:
    """The peft ``LoraConfig`` arguments (JSON-able): adapters on the top ``layers`` layers."""
    if not 1 <= layers <= total:
        raise ValueError(f"layers must be in 1..{total}, got {layers}")
    return {
        "r": rank,
        "lora_alpha": alpha,
        "target_modules": TARGETS,
        "layers_to_transform": list(range(total - layers, total)),
        "modules_to_save": HEADS[head][1],
        "lora_dropout": 0.0,
    }


def adapt(model: nn.Module, config: dict[str, Any]) -> nn.Module:
    """``model`` wrapped with LoRA adapters; only the adapters and the saved modules train."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(**config))


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What training changed: the adapters and the trained heads (peft's own key names)."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(model)


def save_adapter(
    model: nn.Module, head: Head, config: dict[str, Any], path: Path, meta: dict[str, Any]
) -> Path:
    """The adapters and heads of ``model`` as float16 safetensors at ``path``, with ``head``,
    the LoRA config and ``meta`` (window sizes, calibrated thresholds, ...) as metadata."""
    from longmm.runs import save_weights

    state = {k: v.to(torch.float16) for k, v in adapter_state(model).items()}
    save_weights(state, path, metadata=adapter_metadata(head, config, meta))
    return path


def load_adapted(path: str | Path, base: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The model an adapter file describes, adapters merged into the weights (eval mode),
    and the file's metadata. ``base`` is the model folder it adapts (default: the one the file
    names, else the packaged MiniLM)."""
    from peft import set_peft_model_state_dict

    from longmm.runs import load_weights

    info = read_adapter_metadata(path)
    base = base or info["meta"].get("base")
    model = adapt(base_model(info["head"], base), info["lora"])
    state = {k: v.float() for k, v in load_weights(path).items()}
    result = set_peft_model_state_dict(model, state)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise DataError(str(path), f"weights that the model does not have: {unexpected[:3]}")
    return model.merge_and_unload().eval(), info

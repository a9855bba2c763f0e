"""``longmm translate --run DIR "A man rides a bike."``: translate with a trained run.

Loads the run's best checkpoint (``checkpoints/best.ckpt``, read with
``torch.load(weights_only=True)``) and its ``tokenizer.json``; a run killed before it wrote
``tokenizer.json`` still works, as checkpoints carry the tokenizer too. Sentences come from
the command line, or one a line from standard input when none is given. Prints one
translation a line.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path

import torch

from longmm.data.modules import tokenizer_from_json
from longmm.data.text import TextTokenizer
from longmm.data.translation import ParallelData, encode_sources
from longmm.errors import LongmmError
from longmm.runs import read_best_checkpoint
from longmm.tasks.translate import Translate

_BATCH = 64  # sentences per decoding call


def load_translator(run: str | Path) -> tuple[Translate, TextTokenizer, int]:
    """The run's best model (eval mode), its tokenizer and the source ``max_length``."""
    run = Path(run)
    ckpt_path, ckpt = read_best_checkpoint(run, "Translate")
    hparams = ckpt.get("hyper_parameters", {})
    if "_class_path" not in hparams and "beam_size" not in hparams:
        raise LongmmError(f"{ckpt_path}: not a translation checkpoint")
    if hparams.get("vocab_size") is None:
        raise LongmmError(f"{ckpt_path}: the checkpoint does not record vocab_size")
    own = inspect.signature(Translate.__init__).parameters
    model = Translate(**{k: v for k, v in hparams.items() if k in own and k != "self"})
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise LongmmError(f"{ckpt_path}: weights do not fit the model ({err})") from err
    model.eval()
    data_state = ckpt.get(ParallelData.__qualname__, {})
    tok_file = run / "tokenizer.json"
    if tok_file.is_file():
        tokenizer = TextTokenizer.load(tok_file)
    elif "tokenizer" in data_state:
        tokenizer = tokenizer_from_json(data_state["tokenizer"], where=str(ckpt_path))
    else:
        raise LongmmError(f"{tok_file}: tokenizer not found, and the checkpoint has none")
    if tokenizer.vocab_size != model.model.vocab_size:
        raise LongmmError(
            f"{tok_file}: {tokenizer.vocab_size} tokens, but the model has "
            f"{model.model.vocab_size}: tokenizer and checkpoint come from different runs"
        )
    max_length = int(hparams.get("max_len", 256))
    prep = data_state.get("preprocessing")
    if prep:
        max_length = int(json.loads(prep).get("max_length", max_length))
    return model, tokenizer, max_length


def translate(
    model: Translate,
    tokenizer: TextTokenizer,
    sentences: list[str],
    max_length: int = 128,
    beam_size: int | None = None,
    length_penalty: float | None = None,
) -> list[str]:
    """Translations of ``sentences``, in order (empty sentences give empty lines)."""
    out: list[str] = []
    for start in range(0, len(sentences), _BATCH):
        chunk = sentences[start : start + _BATCH]
        src, src_mask = encode_sources(tokenizer, chunk, max_length)
        ids = model.translate_ids(src, src_mask, beam_size, length_penalty)
        out += tokenizer.decode_batch(ids)
    return [o if s.strip() else "" for s, o in zip(sentences, out, strict=True)]


def main(args: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="longmm translate",
        description="Translate sentences with a trained translation run.",
    )
    parser.add_argument("sentences", nargs="*", help="sentences (default: lines of stdin)")
    parser.add_argument("--run", required=True, help="run folder written by `longmm fit`")
    parser.add_argument("--beam", type=int, default=None, help="beam size (1: greedy)")
    parser.add_argument("--length-penalty", type=float, default=None, help="GNMT alpha")
    opts = parser.parse_args(args)
    if opts.beam is not None and opts.beam < 1:
        parser.error("--beam must be >= 1")
    sentences = opts.sentences or [line.rstrip("\n") for line in sys.stdin]
    model, tokenizer, max_length = load_translator(opts.run)
    with torch.inference_mode():
        lines = translate(model, tokenizer, sentences, max_length, opts.beam, opts.length_penalty)
    for line in lines:
        print(line)

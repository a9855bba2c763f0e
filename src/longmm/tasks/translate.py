"""Sequence-to-sequence translation with an encoder-decoder Transformer (Program 4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sacrebleu
import torch
import torch.nn.functional as F
from torch import Tensor

from longmm.data.text import BOS, EOS, PAD, SPECIAL_TOKENS
from longmm.errors import LongmmError
from longmm.io import atomic_write_text
from longmm.models.seq2seq import PositionKind, Seq2SeqTransformer
from longmm.tasks.base import Task

# TextTokenizer fixes the special ids by the order of SPECIAL_TOKENS.
PAD_ID = SPECIAL_TOKENS.index(PAD)
BOS_ID = SPECIAL_TOKENS.index(BOS)
EOS_ID = SPECIAL_TOKENS.index(EOS)
BANNED_IDS = tuple(i for i, t in enumerate(SPECIAL_TOKENS) if t != EOS)


class Translate(Task):
    """Trains a :class:`Seq2SeqTransformer` with label-smoothed cross-entropy (padding
    ignored) and scores it with sacrebleu on detokenized text.

    The architecture arguments are the model's. ``vocab_size`` may stay ``None``: the model
    is then built at setup from the data module's tokenizer, and the size is saved with the
    hyperparameters so that ``load_from_checkpoint`` rebuilds it alone.

    Validation decodes greedily and reports ``val/bleu`` (the monitored metric), ``val/chrf``,
    ``val/loss`` and ``val/accuracy``; limit it with ``--trainer.limit_val_batches`` if it is
    slow. Test reports ``bleu`` and ``chrf`` of beam search (``beam_size``, GNMT
    ``length_penalty`` alpha), ``bleu_greedy`` and ``chrf_greedy``, ``exact_match`` (share of
    beam outputs equal to the reference) and ``accuracy``: teacher-forced next-token accuracy
    over real target tokens. Generation stops at ``max_len_a * source tokens + max_len_b``.
    ``write_artifacts`` writes the beam outputs as ``predictions_test.txt``, in test order.
    """

    monitor = "val/bleu"
    monitor_mode = "max"

    def __init__(
        self,
        vocab_size: int | None = None,
        d_model: int = 256,
        heads: int = 4,
        enc_layers: int = 3,
        dec_layers: int = 3,
        ff: int = 1024,
        dropout: float = 0.1,
        positions: PositionKind = "sinusoidal",
        tie_embeddings: bool = True,
        max_len: int = 256,
        label_smoothing: float = 0.1,
        beam_size: int = 4,
        length_penalty: float = 0.6,
        max_len_a: float = 1.5,
        max_len_b: int = 10,
        lr: float = 7e-4,
        warmup_epochs: float = 1.0,
        adam_beta2: float = 0.98,
        **training: Any,
    ) -> None:
        super().__init__(lr=lr, warmup_epochs=warmup_epochs, **training)
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        self.save_recipe_hyperparameters()
        self.architecture = {
            "d_model": d_model,
            "heads": heads,
            "enc_layers": enc_layers,
            "dec_layers": dec_layers,
            "ff": ff,
            "dropout": dropout,
            "positions": positions,
            "tie_embeddings": tie_embeddings,
            "max_len": max_len,
        }
        self.label_smoothing = label_smoothing
        self.beam_size = beam_size
        self.length_penalty = length_penalty
        self.max_len_a = max_len_a
        self.max_len_b = max_len_b
        self.adam_beta2 = adam_beta2
        self.net: Seq2SeqTransformer | None = None
        if vocab_size is not None:
            self._build(vocab_size)
        self.predictions: dict[str, list[str]] = {}
        self._outputs: dict[str, list[tuple[int, str, str | None]]] = {}
        self._sums: dict[str, list[float]] = {}

    def _build(self, vocab_size: int) -> None:
        self.net = Seq2SeqTransformer(vocab_size, pad_id=PAD_ID, **self.architecture)
        self.hparams["vocab_size"] = vocab_size  # saved in checkpoints from here on

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        tokenizer = getattr(dm, "fitted_tokenizer", None)
        if tokenizer is None:
            if self.net is None:
                raise LongmmError("Translate needs vocab_size or a data module with a tokenizer")
            return
        tok = tokenizer()
        if (tok.pad_id, tok.bos_id, tok.eos_id) != (PAD_ID, BOS_ID, EOS_ID):
            raise LongmmError(f"tokenizer special ids differ from {SPECIAL_TOKENS}")
        if self.net is None:
            self._build(tok.vocab_size)
        elif self.net.vocab_size != tok.vocab_size:
            raise LongmmError(
                f"model vocab_size={self.net.vocab_size}, but the tokenizer has {tok.vocab_size}"
            )

    @property
    def model(self) -> Seq2SeqTransformer:
        if self.net is None:
            raise LongmmError("the model is not built yet: give vocab_size or call setup()")
        return self.net

    def configure_optimizers(self) -> Any:
        config = super().configure_optimizers()
        for group in config["optimizer"].param_groups:
            if "betas" in group:  # Transformers train steadier with a shorter second moment
                group["betas"] = (group["betas"][0], self.adam_beta2)
        return config

    # -- steps -------------------------------------------------------------------------------
    def _token_logits(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Logits ``(N, V)`` and targets ``(N,)`` of the real target tokens only."""
        net = self.model
        hidden = net.decode(
            batch["tgt_in"], net.encode(batch["src"], batch["src_mask"]), batch["src_mask"]
        )
        mask = batch["tgt_mask"]
        return net.project(hidden[mask]).float(), batch["tgt_out"][mask]

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        logits, target = self._token_logits(batch)
        loss = F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)
        self.log(
            "train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(target)
        )
        return loss

    def _eval_step(self, batch: dict[str, Tensor], stage: str, beam: bool) -> None:
        logits, target = self._token_logits(batch)
        nll = F.cross_entropy(logits, target, reduction="sum")
        correct = (logits.argmax(-1) == target).sum()
        sums = self._sums.setdefault(stage, [0.0, 0.0, 0.0])
        sums[0] += float(nll)
        sums[1] += float(correct)
        sums[2] += len(target)
        greedy = self.translate_ids(batch["src"], batch["src_mask"], beam_size=1)
        best = (
            self.translate_ids(batch["src"], batch["src_mask"], beam_size=self.beam_size)
            if beam
            else None
        )
        tok = self.trainer.datamodule.fitted_tokenizer()
        greedy_text = tok.decode_batch(greedy)
        best_text = tok.decode_batch(best) if best is not None else [None] * len(greedy_text)
        outputs = self._outputs.setdefault(stage, [])
        for i, g, b in zip(batch["index"].tolist(), greedy_text, best_text, strict=True):
            outputs.append((i, g, b))

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val", beam=False)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test", beam=True)

    def _eval_epoch_end(self, stage: str) -> None:
        outputs = sorted(self._outputs.pop(stage, []))
        nll, correct, tokens = self._sums.pop(stage, [0.0, 0.0, 0.0])
        if not outputs:
            return
        references = self.trainer.datamodule.references(stage)
        refs = [references[i] for i, _, _ in outputs]
        greedy = [g for _, g, _ in outputs]
        results: dict[str, Any] = {"count": len(outputs)}
        if outputs[0][2] is not None:
            best = [b or "" for _, _, b in outputs]
            results["bleu"] = round(sacrebleu.corpus_bleu(best, [refs]).score, 2)
            results["chrf"] = round(sacrebleu.corpus_chrf(best, [refs]).score, 2)
            results["bleu_greedy"] = round(sacrebleu.corpus_bleu(greedy, [refs]).score, 2)
            results["chrf_greedy"] = round(sacrebleu.corpus_chrf(greedy, [refs]).score, 2)
            exact = sum(h == r for h, r in zip(best, refs, strict=True))
            results["exact_match"] = round(exact / len(refs), 4)
            results["beam_size"] = self.beam_size
            results["length_penalty"] = self.length_penalty
            self.predictions[stage] = best
        else:
            results["bleu"] = round(sacrebleu.corpus_bleu(greedy, [refs]).score, 2)
            results["chrf"] = round(sacrebleu.corpus_chrf(greedy, [refs]).score, 2)
            results["decoding"] = "greedy"
            self.predictions[stage] = greedy
        results["accuracy"] = round(correct / max(tokens, 1), 4)
        results["loss"] = round(nll / max(tokens, 1), 4)
        self.eval_results[stage] = results
        for key in ("bleu", "chrf", "accuracy", "loss", "bleu_greedy"):
            if key in results:
                self.log(f"{stage}/{key}", float(results[key]), prog_bar=key == "bleu")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    # -- decoding ----------------------------------------------------------------------------
    @torch.no_grad()
    def translate_ids(
        self,
        src: Tensor,
        src_mask: Tensor,
        beam_size: int | None = None,
        length_penalty: float | None = None,
    ) -> Tensor:
        """Generated ids ``(B, L)`` (ending in ``</s>``, padded): greedy when ``beam_size``
        is 1, else beam search; defaults are the task's decoding settings."""
        net = self.model
        was_training = net.training
        net.eval()
        try:
            k = self.beam_size if beam_size is None else beam_size
            common = {
                "bos_id": BOS_ID,
                "eos_id": EOS_ID,
                "max_len_a": self.max_len_a,
                "max_len_b": self.max_len_b,
                "banned_ids": BANNED_IDS,
            }
            if k == 1:
                return net.greedy(src, src_mask, **common)
            alpha = self.length_penalty if length_penalty is None else length_penalty
            return net.beam_search(src, src_mask, beam_size=k, length_penalty_alpha=alpha, **common)
        finally:
            net.train(was_training)

    # -- run folder --------------------------------------------------------------------------
    def write_artifacts(self, run_dir: str | Path) -> list[str]:
        """``predictions_test.txt``: one translation a line, in test order. No plots."""
        lines = self.predictions.get("test")
        if lines is not None:
            text = "".join(line.replace("\n", " ") + "\n" for line in lines)
            atomic_write_text(Path(run_dir) / "predictions_test.txt", text)
        return []

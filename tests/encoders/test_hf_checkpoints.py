"""Bring-your-own Hugging Face checkpoints: tiny random-weight BERT, ViT and CLIP folders that
the tests save themselves load offline as longmm encoders, match the model they came from,
train, and refuse folders that are not what they should be."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from longmm.encoders import EncoderOutput, PretrainedImageEncoder, PretrainedTextEncoder
from longmm.errors import DataError
from longmm.fusion import WeightedFusion
from longmm.tasks import Classify
from longmm.training.optim import param_groups

transformers = pytest.importorskip("transformers")

VISION = {"image_size": 16, "patch_size": 4, "hidden_size": 32, "num_hidden_layers": 2,
          "num_attention_heads": 4, "intermediate_size": 64}  # fmt: skip


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    tiny_text = {"vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "intermediate_size": 64}  # fmt: skip
    models = {
        "bert": transformers.BertModel(transformers.BertConfig(**tiny_text)),
        "vit": transformers.ViTModel(transformers.ViTConfig(num_channels=3, **VISION)),
        "clip_vision": transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**VISION)),
        "clip": transformers.CLIPModel(
            transformers.CLIPConfig(
                text_config={
                    **tiny_text,
                    "num_hidden_layers": 1,
                    "pad_token_id": 1,
                    "bos_token_id": 0,
                    "eos_token_id": 2,
                },
                vision_config={**VISION, "num_hidden_layers": 1},
                projection_dim=16,
            )
        ),
    }
    out = {}
    for name, model in models.items():
        model.save_pretrained(root / name)
        out[name] = root / name
    return out


def images(b: int = 3, channels: int = 1, size: int = 16) -> torch.Tensor:
    return torch.randn(b, channels, size, size, generator=torch.Generator().manual_seed(1))


# ---- images ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vit", "clip_vision", "clip"])
def test_image_checkpoint_is_an_encoder(folders: dict[str, Path], name: str) -> None:
    enc = PretrainedImageEncoder(str(folders[name])).eval()
    x = images(channels=3)
    out = enc(x)
    assert isinstance(out, EncoderOutput)
    assert out.tokens.shape == (3, 16, 32) and out.pooled.shape == (3, 32)
    assert out.mask.all() and enc.dim == 32
    # The same numbers as the checkpoint read by transformers itself.
    cls = transformers.CLIPModel if name == "clip" else transformers.AutoModel
    ref = cls.from_pretrained(str(folders[name]), local_files_only=True).eval()
    with torch.no_grad():
        if name == "clip":
            expected = ref.vision_model(pixel_values=x).pooler_output
        elif name == "vit":
            expected = ref(pixel_values=x).last_hidden_state[:, 0]
        else:
            expected = ref(pixel_values=x).pooler_output
        assert torch.allclose(out.pooled, expected, atol=1e-5)


def test_grey_and_other_sizes_are_adapted(folders: dict[str, Path]) -> None:
    enc = PretrainedImageEncoder(str(folders["vit"]), pooling="mean").eval()
    grey = images(b=2, channels=1, size=28)  # MNIST-sized, one channel
    out = enc(grey)
    assert out.tokens.shape == (2, 16, 32)
    resized = torch.nn.functional.interpolate(grey, size=(16, 16), mode="bilinear")
    assert torch.allclose(out.pooled, enc(resized.expand(-1, 3, -1, -1)).pooled, atol=1e-5)
    assert torch.allclose(out.pooled, out.tokens.mean(dim=1), atol=1e-6)
    with pytest.raises(ValueError, match=r"1 or 3"):
        enc(images(channels=2))


def test_image_encoder_trains_or_stays_frozen(folders: dict[str, Path]) -> None:
    enc = PretrainedImageEncoder(str(folders["vit"]), lr_mult=0.5)
    enc(images()).pooled.sum().backward()
    assert all(p.grad is not None for p in enc.parameters())
    groups = param_groups(enc, weight_decay=0.01, lr=1e-3)
    assert {g.get("lr") for g in groups if g["params"]} == {5e-4}
    frozen = PretrainedImageEncoder(str(folders["clip_vision"]), freeze=True).train()
    assert not frozen.model.training and not any(p.requires_grad for p in frozen.parameters())


def test_a_vit_inside_a_fusion_model(folders: dict[str, Path]) -> None:
    from longmm.encoders import AudioCNN

    torch.manual_seed(0)
    model = Classify(
        encoders={
            "image": PretrainedImageEncoder(str(folders["vit"])),
            "audio": AudioCNN(n_mels=40, dim=16, channels=[4]),
        },
        fusion=WeightedFusion(out_dim=8),
        num_classes=3,
    )
    batch = {
        "image": images(b=4, size=8),
        "audio": torch.randn(4, 40, 12),
        "audio_mask": torch.ones(4, 12, dtype=torch.bool),
        "label": torch.tensor([0, 1, 2, 0]),
    }
    loss = model.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss)
    patches = model.encoders["image"].model.embeddings.patch_embeddings.projection
    assert patches.weight.grad.abs().sum() > 0


def test_folders_that_are_not_image_models_are_named(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(DataError, match="config.json"):
        PretrainedImageEncoder(str(tmp_path))
    with pytest.raises(DataError, match="not an image model"):
        PretrainedImageEncoder(str(folders["bert"]))


# ---- text ----------------------------------------------------------------------------------


def test_bert_checkpoint_is_a_text_encoder(folders: dict[str, Path]) -> None:
    enc = PretrainedTextEncoder(str(folders["bert"]), freeze=False, pooling="mean").eval()
    ids = torch.tensor([[2, 15, 16, 17, 3], [2, 40, 3, 0, 0]])
    mask = ids != 0
    out = enc(ids, mask)
    assert out.tokens.shape == (2, 5, 32) and enc.dim == 32
    ref = transformers.AutoModel.from_pretrained(str(folders["bert"]), local_files_only=True)
    with torch.no_grad():
        hidden = ref.eval()(input_ids=ids, attention_mask=mask.long()).last_hidden_state
    expected = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    assert torch.allclose(out.pooled, expected, atol=1e-5)
    # Padding does not change a sentence.
    alone = enc(ids[1:, :3], mask[1:, :3])
    assert torch.allclose(alone.pooled[0], out.pooled[1], atol=1e-5)
    with pytest.raises(DataError, match="vocab_size"):
        enc(torch.tensor([[2, 100]]))


@pytest.mark.xfail(
    reason="with transformers 5.25 the word embeddings get zero gradients when another test of "
    "this module loaded the folders first (passes alone; fails at 0f480fc too); to be found",
    strict=False,
)
def test_bert_checkpoint_trains_down_to_its_embeddings(folders: dict[str, Path]) -> None:
    enc = PretrainedTextEncoder(str(folders["bert"]), freeze=False, pooling="mean").train()
    ids = torch.tensor([[2, 15, 16, 17, 3], [2, 40, 3, 0, 0]])
    enc(ids, ids != 0).pooled.sum().backward()
    assert enc.model.embeddings.word_embeddings.weight.grad[40].abs().sum() > 0


def test_bert_checkpoint_frozen_with_top_layer_unfrozen(folders: dict[str, Path]) -> None:
    enc = PretrainedTextEncoder(
        str(folders["bert"]), freeze=True, unfreeze_at_epoch=1, unfreeze_layers=1
    )
    enc.apply_unfreeze_schedule(0)
    assert enc.trainable_layers() == []
    enc.apply_unfreeze_schedule(1)
    assert enc.trainable_layers() == [1]

"""PretrainedTextEncoder (the packaged all-MiniLM-L6-v2, offline): the model's own tokenizer,
embeddings equal to sentence-transformers', gradual unfreezing with per-module learning
rates, and a resumed run that keeps the unfrozen layers trainable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from longmm.cli import main
from longmm.data import TextData
from longmm.data.text import TextTokenizer, pretrained_path
from longmm.encoders.pretrained import PretrainedTextEncoder
from longmm.errors import DataError
from longmm.tasks import Classify
from longmm.training.callbacks import apply_unfreeze_schedule
from longmm.training.optim import build_optimizer, param_groups

SENTENCES = ["it 's a charming and often affecting journey .", "bad", "not bad at all !"]


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    return TextTokenizer.load(pretrained_path("minilm"))


@pytest.fixture(scope="module")
def frozen() -> PretrainedTextEncoder:
    return PretrainedTextEncoder().eval()


def backbone_grads(enc: PretrainedTextEncoder) -> list[bool]:
    """Per block (embeddings, then each layer): does any weight train?"""
    blocks = [enc.model.embeddings, *enc.layers]
    return [any(p.requires_grad for p in b.parameters()) for b in blocks]


# ---- tokenizer ----------------------------------------------------------------------------------


def test_the_models_tokenizer_with_its_own_special_ids(tokenizer: TextTokenizer) -> None:
    backend = tokenizer.backend
    assert tokenizer.pad_id == backend.token_to_id("[PAD]") == 0
    assert tokenizer.unk_id == backend.token_to_id("[UNK]") == 100
    assert (tokenizer.cls_id, tokenizer.sep_id) == (101, 102)
    assert tokenizer.vocab_size == 30522 and tokenizer.special_tokens_added == 2
    ids = tokenizer.encode(SENTENCES[0])
    assert ids[0] == tokenizer.cls_id and ids[-1] == tokenizer.sep_id
    cut = tokenizer.encode(SENTENCES[0], max_length=5)  # [SEP] kept inside max_length
    assert cut == [*ids[:4], tokenizer.sep_id]
    assert tokenizer.decode(ids) == "it's a charming and often affecting journey."
    batch, mask = tokenizer.encode_batch(SENTENCES, max_length=8)
    assert batch.shape == (3, 8) and mask.sum(1).tolist() == [8, 3, 7]
    assert (batch[~mask] == 0).all()
    with pytest.raises(ValueError, match="no room"):
        tokenizer.encode("x", max_length=1)
    with pytest.raises(DataError, match="no '<s>' token"):
        _ = tokenizer.bos_id


def test_text_data_loads_the_tokenizer_and_saves_it(tmp_path: Path) -> None:
    rows = [("0", "a dull , lifeless film"), ("1", "a moving and funny story")] * 10
    table = tmp_path / "reviews.tsv"
    table.write_text("sentence\tlabel\n" + "".join(f"{t}\t{lab}\n" for lab, t in rows))
    dm = TextData(root=str(table), text_column="sentence", tokenizer="minilm", batch_size=4)
    dm.setup("fit")
    assert dm.vocab_size == 30522 and dm.pad_id == 0
    batch = next(iter(dm.train_dataloader()))
    lengths = batch["text_mask"].sum(1)
    assert (batch["text"][:, 0] == 101).all()
    assert (batch["text"][torch.arange(4), lengths - 1] == 102).all()
    dm.save_artifacts(tmp_path / "run")
    saved = TextTokenizer.load(tmp_path / "run")
    assert saved.encode(rows[0][1]) == dm.tokenizer.encode(rows[0][1])
    prep = json.loads((tmp_path / "run" / "data.json").read_text())["preprocessing"]
    assert prep["tokenizer_source"] == "minilm" and prep["special_tokens_added"] == 2
    # A path to the folder or to tokenizer.json works the same; a wrong path is named.
    by_path = TextData(root=str(table), text_column="sentence", tokenizer=str(pretrained_path()))
    assert by_path.fitted_tokenizer().encode("moving") == dm.tokenizer.encode("moving")
    with pytest.raises(DataError, match="nowhere.*not found"):
        TextData(root=str(table), tokenizer=str(tmp_path / "nowhere")).fitted_tokenizer()


# ---- encoder ------------------------------------------------------------------------------------


def test_shapes_and_pooling(frozen: PretrainedTextEncoder, tokenizer: TextTokenizer) -> None:
    ids, mask = tokenizer.encode_batch(SENTENCES)
    out = frozen(ids, mask)
    assert frozen.dim == 384
    assert out.tokens.shape == (3, ids.shape[1], 384) and out.pooled.shape == (3, 384)
    alone = frozen(*tokenizer.encode_batch(SENTENCES[1:2]))
    assert torch.allclose(alone.pooled[0], out.pooled[1], atol=1e-5)  # padding is ignored
    frozen.pooling = "cls"
    try:
        assert torch.equal(frozen(ids, mask).pooled, out.tokens[:, 0])
    finally:
        frozen.pooling = "mean"
    with pytest.raises(DataError, match="vocab_size"):
        frozen(torch.tensor([[101, 40000, 102]]))


def test_same_embedding_as_sentence_transformers(
    frozen: PretrainedTextEncoder, tokenizer: TextTokenizer
) -> None:
    try:
        from sentence_transformers import SentenceTransformer
    except Exception as exc:  # not installed, or it does not import offline
        pytest.skip(f"sentence_transformers does not import: {exc}")
    model = SentenceTransformer(str(pretrained_path()), device="cpu")
    expected = model.encode(SENTENCES, convert_to_tensor=True)  # mean pooling, normalized
    with torch.no_grad():
        pooled = frozen(*tokenizer.encode_batch(SENTENCES)).pooled
    assert torch.allclose(torch.nn.functional.normalize(pooled, dim=-1), expected, atol=1e-5)


def test_gradual_unfreezing_and_learning_rates() -> None:
    enc = PretrainedTextEncoder(unfreeze_at_epoch=1, unfreeze_layers=2, lr_mult=0.1)
    model = Classify(encoders={"text": enc}, num_classes=2)
    groups = param_groups(model, 0.01)
    optimizer = build_optimizer(groups, "adamw", lr=1e-3)
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in model.parameters()}  # frozen ones too
    for group in optimizer.param_groups:
        backbone = {id(p) for p in enc.parameters()}
        if "lr_mult" in group:
            assert group["lr"] == pytest.approx(1e-4)
            assert all(id(p) in backbone for p in group["params"])
        else:
            assert group["lr"] == 1e-3 and not any(id(p) in backbone for p in group["params"])
    assert {g["weight_decay"] for g in optimizer.param_groups if "lr_mult" in g} == {0.0, 0.01}

    model.train()
    assert backbone_grads(enc) == [False] * 7
    assert enc.model.embeddings.training  # until the schedule is applied: no Lightning warning
    assert all(p.requires_grad for p in model.head.parameters())
    assert apply_unfreeze_schedule(model, 0) == ["encoders.text"]
    assert backbone_grads(enc) == [False] * 7 and not enc.model.embeddings.training
    apply_unfreeze_schedule(model, 1)
    assert backbone_grads(enc) == [False, False, False, False, False, True, True]
    assert enc.trainable_layers() == [4, 5]
    assert enc.layers[5].training and not enc.layers[3].training  # frozen blocks: no dropout
    model.train()
    assert enc.layers[5].training and not enc.layers[3].training

    # One optimizer step moves the unfrozen layers and the head, nothing frozen.
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    tokens = torch.tensor([[101, 2919, 102], [101, 2204, 102]])
    loss = torch.nn.functional.cross_entropy(
        model({"text": tokens, "text_mask": tokens > 0}), torch.tensor([0, 1])
    )
    loss.backward()
    optimizer.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith("head.") for n in moved)
    assert any(".layer.5." in n for n in moved) and any(".layer.4." in n for n in moved)
    assert not any(".layer.3." in n or "embeddings" in n for n in moved)

    everything = PretrainedTextEncoder(unfreeze_at_epoch=0)
    everything.apply_unfreeze_schedule(0)
    assert all(p.requires_grad for p in everything.parameters())


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="needs freeze=True"):
        PretrainedTextEncoder(freeze=False, unfreeze_at_epoch=1)
    with pytest.raises(ValueError, match="unfreeze_layers"):
        PretrainedTextEncoder(unfreeze_layers=0)
    with pytest.raises(DataError, match="config.json"):
        PretrainedTextEncoder(path="/nonexistent/model")


# ---- a run through the command line, resumed after the unfreeze epoch --------------------------

PROBE = """\
import json
import lightning as L


class Probe(L.Callback):
    '''Record, at each epoch's first batch, which blocks train and the optimizer's rates.'''

    def __init__(self, out: str) -> None:
        self.out = out

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx:
            return
        enc = pl_module.encoders["text"]
        opt = trainer.optimizers[0]
        state = opt.state
        row = {
            "epoch": trainer.current_epoch,
            "layers": enc.trainable_layers(),
            "lrs": [[g.get("lr_mult", 1.0), g["lr"]] for g in opt.param_groups],
            "adam_state_on_backbone": any(p in state for p in enc.parameters()),
        }
        with open(self.out, "a") as fh:
            fh.write(json.dumps(row) + "\\n")
"""

RECIPE = """\
seed_everything: 0
model:
  class_path: longmm.tasks.Classify
  init_args:
    encoders:
      text:
        class_path: longmm.encoders.pretrained.PretrainedTextEncoder
        init_args: {unfreeze_at_epoch: 1, unfreeze_layers: 1, lr_mult: 0.1, max_length: 16}
    lr: 0.001
    scheduler: constant
data:
  class_path: longmm.data.TextData
  init_args: {root: ROOT, text_column: sentence, tokenizer: minilm, max_length: 16,
              batch_size: 4, split: [0.6, 0.2, 0.2]}
trainer:
  limit_train_batches: 2
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
    - class_path: longmm.training.callbacks.GradualUnfreeze
    - class_path: probe.Probe
      init_args: {out: PROBE_OUT}
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {dirpath: EVERY, filename: "e{epoch}", auto_insert_metric_name: false,
                  save_top_k: -1, every_n_epochs: 1}
"""


def test_unfreezing_through_fit_and_resume(tmp_path: Path, monkeypatch) -> None:
    rows = [("0", "a dull , lifeless film"), ("1", "a moving and funny story")] * 10
    table = tmp_path / "reviews.tsv"
    table.write_text("sentence\tlabel\n" + "".join(f"{t}\t{lab}\n" for lab, t in rows))
    (tmp_path / "probe.py").write_text(PROBE)
    monkeypatch.syspath_prepend(str(tmp_path))
    log = tmp_path / "probe.jsonl"
    recipe = tmp_path / "recipe.yaml"
    every = tmp_path / "every"
    text = RECIPE.replace("ROOT", str(table)).replace("PROBE_OUT", str(log))
    recipe.write_text(text.replace("EVERY", str(every)))
    out = str(tmp_path / "run")

    main(["fit", "--config", str(recipe), "--trainer.max_epochs", "2", "--out", out])
    # Resume from the end of epoch 1, after the unfreeze. (Not `last`: Lightning 2.6 rewrites
    # last.ckpt only when the monitored metric improves.)
    main(["fit", "--config", str(recipe), "--trainer.max_epochs", "3", "--out", out,
          "--ckpt_path", str(every / "e1.ckpt")])  # fmt: skip
    seen = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["epoch"] for r in seen] == [0, 1, 2]
    assert [r["layers"] for r in seen] == [[], [5], [5]]  # the resumed epoch 2 too
    assert [r["adam_state_on_backbone"] for r in seen] == [False, False, True]
    for row in seen:  # the same groups, base rate x lr_mult, in the fresh and resumed runs
        assert sorted(row["lrs"]) == sorted(seen[0]["lrs"])
        assert all(lr == pytest.approx(1e-3 * mult) for mult, lr in row["lrs"])
    assert any(mult == 0.1 for mult, _ in seen[0]["lrs"])
    metrics = json.loads((Path(out) / "metrics.json").read_text())
    assert metrics["epochs"] == 3


SST2 = Path(__file__).resolve().parents[3] / "shared" / "data" / "sst2"


@pytest.mark.slow
@pytest.mark.skipif(not SST2.is_dir(), reason=f"{SST2} is missing")
def test_minilm_sst2_recipe_runs_on_real_data(tmp_path: Path) -> None:
    out = tmp_path / "run"
    main(
        [
            "fit",
            "--config",
            str(Path(__file__).resolve().parents[2] / "recipes" / "minilm_sst2.yaml"),
            "--data.root",
            str(SST2),
            "--trainer.max_epochs",
            "2",
            "--trainer.limit_train_batches",
            "5",
            "--trainer.limit_val_batches",
            "5",
            "--trainer.enable_progress_bar",
            "false",
            "--out",
            str(out),
        ]
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["count"] == 872 and metrics["epochs"] == 2
    prep = json.loads((out / "data.json").read_text())["preprocessing"]
    assert prep["tokenizer_source"] == "minilm" and prep["vocab_size"] == 30522

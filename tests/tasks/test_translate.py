"""The translation task: loss, learning, the run folder, checkpoints, `longmm translate`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from longmm.cli import main
from longmm.cli.translate import load_translator, translate
from longmm.cli.translate import main as translate_main
from longmm.data.text import TextTokenizer
from longmm.data.translation import PadPairs, encode_sources, token_rows
from longmm.errors import LongmmError
from longmm.runs import load_weights
from longmm.tasks import Translate

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
TINY = dict(d_model=32, heads=4, enc_layers=1, dec_layers=1, ff=64, dropout=0.0, max_len=64)

PAIRS = [
    ("one dog", "ein Hund"),
    ("two dogs", "zwei Hunde"),
    ("three cats", "drei Katzen"),
    ("a red car", "ein rotes Auto"),
    ("two red cars", "zwei rote Autos"),
    ("the house", "das Haus"),
]


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    texts = [t for pair in PAIRS for t in pair]
    return TextTokenizer.train(texts, vocab_size=400, min_frequency=1)


def pair_batch(tokenizer: TextTokenizer, pairs: list[tuple[str, str]]) -> dict:
    src_rows = token_rows(tokenizer, [s for s, _ in pairs])
    tgt_rows = token_rows(tokenizer, [t for _, t in pairs])
    items = [
        {
            "src": torch.tensor([*s, tokenizer.eos_id]),
            "tgt": torch.tensor(t),
            "index": torch.tensor(i),
        }
        for i, (s, t) in enumerate(zip(src_rows, tgt_rows, strict=True))
    ]
    return PadPairs(tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id)(items)


def test_loss_ignores_padding(tokenizer: TextTokenizer) -> None:
    model = Translate(vocab_size=tokenizer.vocab_size, **TINY).eval()
    batch = pair_batch(tokenizer, PAIRS)
    logits, target = model._token_logits(batch)
    assert len(target) == int(batch["tgt_mask"].sum())
    batched = F.cross_entropy(logits, target, reduction="sum")
    alone = sum(
        F.cross_entropy(*model._token_logits(pair_batch(tokenizer, [p])), reduction="sum")
        for p in PAIRS
    )
    torch.testing.assert_close(batched, alone, atol=1e-4, rtol=1e-5)


def test_overfits_a_few_pairs_and_decodes_them(tokenizer: TextTokenizer) -> None:
    torch.manual_seed(0)
    model = Translate(vocab_size=tokenizer.vocab_size, **TINY, label_smoothing=0.0)
    batch = pair_batch(tokenizer, PAIRS)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        logits, target = model._token_logits(batch)
        loss = F.cross_entropy(logits, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    references = [t for _, t in PAIRS]
    for beam in (1, 3):
        ids = model.translate_ids(batch["src"], batch["src_mask"], beam_size=beam)
        assert tokenizer.decode_batch(ids) == references
    assert model.training  # decoding puts the model back in its mode


def test_fit_numbers_recipe_writes_a_translation_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    main(
        [
            "fit",
            "--config",
            str(RECIPES / "transformer_numbers.yaml"),
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_train_batches",
            "2",
            "--trainer.enable_progress_bar",
            "false",
            "--out",
            str(out),
        ]
    )
    for name in ("metrics.json", "tokenizer.json", "predictions_test.txt", "report.md"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("bleu", "chrf", "bleu_greedy", "chrf_greedy", "accuracy", "exact_match"):
        assert key in metrics["test"], key
    assert metrics["test"]["count"] == 600 and metrics["val"]["count"] == 600
    assert metrics["monitor"]["name"] == "val/bleu"
    assert len((out / "predictions_test.txt").read_text().split("\n")) == 601

    # The checkpoint alone rebuilds the model (vocab_size was saved at setup).
    ckpt = out / "checkpoints" / "best.ckpt"
    model = Translate.load_from_checkpoint(ckpt)
    weights = load_weights(out / "checkpoints" / "best.safetensors")
    state = model.state_dict()
    assert state.keys() == weights.keys()
    assert all(torch.equal(state[k], weights[k]) for k in state)

    # `longmm test` from the run folder rebuilds everything and gets the same scores.
    main(["test", "--config", str(out / "config.yaml"), "--ckpt_path", str(ckpt)])
    tested = json.loads((out / "metrics_test.json").read_text())
    assert tested["bleu"] == metrics["test"]["bleu"]
    assert tested["accuracy"] == metrics["test"]["accuracy"]

    capsys.readouterr()
    translate_main(["--run", str(out), "forty-two apples", "at half past four", "--beam", "2"])
    assert len(capsys.readouterr().out.split("\n")) == 3
    model, tok, max_length = load_translator(out)
    assert max_length == 64
    (out / "tokenizer.json").unlink()  # as in a run killed before it wrote the file
    assert load_translator(out)[1].backend.to_str() == tok.backend.to_str()
    src, mask = encode_sources(tok, ["forty-two apples"], max_length)
    greedy = tok.decode_batch(model.translate_ids(src, mask, beam_size=1))
    assert translate(model, tok, ["forty-two apples", ""], max_length, beam_size=1) == [
        greedy[0],
        "",
    ]


def test_translate_command_errors(tmp_path: Path) -> None:
    with pytest.raises(LongmmError, match="run folder not found"):
        translate_main(["--run", str(tmp_path / "nope"), "Hello."])
    (tmp_path / "run").mkdir()
    with pytest.raises(LongmmError, match="best.ckpt: checkpoint not found"):
        translate_main(["--run", str(tmp_path / "run"), "Hello."])


def test_model_needs_a_vocabulary() -> None:
    task = Translate()
    with pytest.raises(LongmmError, match="vocab_size"):
        _ = task.model
    with pytest.raises(ValueError, match="beam_size"):
        Translate(vocab_size=10, beam_size=0)

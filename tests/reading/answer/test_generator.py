"""Bring your own generator: a tiny random causal LM writes answers from the evidence."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from longmm.cli.read import main as read_main
from longmm.errors import DataError, LongmmError
from longmm.reading.answer import Answer, Evidence
from longmm.reading.answer.generator import (
    SYSTEM_PROMPT,
    GeneratingReader,
    Generator,
    check_folder,
    citations,
)
from longmm.reading.reader import RetrievalReader

CONTRACT = """# Lease agreement

The lease is made between Northwind Properties, the landlord, and Ada Lovelace, the tenant.

The tenant pays a monthly rent of 1,450 euros on the first day of each month. Late payment
incurs a fee of 40 euros.

Either party may end the lease with three months of written notice.
"""
QUESTION = "What is the late payment fee?"
PASSAGES = [
    Evidence("Late payment incurs a fee of 40 euros.", "doc.md", 100, 138, page=2),
    Evidence("The tenant pays a monthly rent of 1,450 euros.", "notes.md", 0, 46),
    Evidence(
        "Either party may end the lease with notice.", "doc.md", 200, 243, page=3, last_page=4
    ),
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
NO_SYSTEM_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
    + CHAT_TEMPLATE
)


def write_tiny_lm(folder: Path, chat_template: str | None = None) -> Path:
    """A 1-layer random GPT-2 and a byte-level BPE tokenizer trained on a few sentences."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([SYSTEM_PROMPT, CONTRACT, QUESTION] * 3, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<pad>"
    )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    config = GPT2Config(
        n_layer=1,
        n_head=2,
        n_embd=32,
        n_positions=1024,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def lm_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_lm(tmp_path_factory.mktemp("tiny_lm"))


@pytest.fixture(scope="module")
def chat_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_lm(tmp_path_factory.mktemp("tiny_chat_lm"), CHAT_TEMPLATE)


@pytest.fixture(scope="module")
def generator(lm_folder: Path) -> Generator:
    return Generator(lm_folder, max_new_tokens=16)


def test_generate_and_stream_agree(generator: Generator) -> None:
    text = generator.generate(QUESTION, PASSAGES)
    assert isinstance(text, str) and text == text.strip()
    pieces = list(generator.stream(QUESTION, PASSAGES))
    assert pieces and all(isinstance(p, str) for p in pieces)
    assert "".join(pieces).strip() == text


def test_plain_prompt_numbers_the_passages_then_the_question(generator: Generator) -> None:
    assert not generator.has_chat_template
    prompt = generator.prompt(QUESTION, PASSAGES)
    assert prompt.startswith(SYSTEM_PROMPT)
    labels = ["[1] (doc.md, page 2)", "[2] (notes.md)", "[3] (doc.md, pages 3-4)"]
    at = [prompt.index(label) for label in labels]
    assert at == sorted(at)
    for p in PASSAGES:
        assert p.text in prompt
    assert prompt.index(QUESTION) > at[-1]
    assert prompt.endswith("Answer:")


def test_prompt_is_capped_to_the_context(lm_folder: Path) -> None:
    gen = Generator(lm_folder, max_new_tokens=16)
    assert gen.context == 1024
    lengths = [len(gen.encode(QUESTION, PASSAGES[:k])) for k in (1, 2, 3)]
    assert lengths == sorted(lengths) and lengths[-1] < gen.context - 16
    assert gen.fit(QUESTION, PASSAGES) == PASSAGES

    gen.max_new_tokens = gen.context - lengths[1]  # room for two passages exactly
    assert gen.fit(QUESTION, PASSAGES) == PASSAGES[:2]

    gen.max_new_tokens = gen.context - (lengths[0] - 5)  # not even the first passage whole
    (cut,) = gen.fit(QUESTION, PASSAGES)
    assert 0 < len(cut.text) < len(PASSAGES[0].text)
    assert PASSAGES[0].text.startswith(cut.text) and cut.end == cut.start + len(cut.text)
    assert len(gen.encode(QUESTION, [cut])) <= gen.budget

    gen.max_new_tokens = gen.context - 5  # not even the instructions
    with pytest.raises(DataError, match="question"):
        gen.fit(QUESTION, PASSAGES)


def test_max_new_tokens_must_leave_room(lm_folder: Path) -> None:
    with pytest.raises(ValueError, match="max_new_tokens"):
        Generator(lm_folder, max_new_tokens=1024)
    with pytest.raises(ValueError, match="at least 1"):
        Generator(lm_folder, max_new_tokens=0)


def test_citations() -> None:
    text = "As [2] and [1] say (see [2], [7] and [1, 3]), the fee is [0] 40 euros [x]."
    assert citations(text, 3) == [2, 1, 3]
    assert citations("no citations here", 3) == []


def test_chat_template_is_used(chat_folder: Path) -> None:
    gen = Generator(chat_folder, max_new_tokens=8)
    assert gen.has_chat_template
    prompt = gen.prompt(QUESTION, PASSAGES)
    assert prompt.startswith("<|system|>" + SYSTEM_PROMPT)
    assert "<|user|>Passages:" in prompt and QUESTION in prompt
    assert prompt.endswith("<|assistant|>")
    assert isinstance(gen.generate(QUESTION, PASSAGES), str)


def test_template_without_system_role_gets_it_in_the_user_turn(lm_folder: Path) -> None:
    gen = Generator(lm_folder, max_new_tokens=8)
    gen.tokenizer.chat_template = NO_SYSTEM_TEMPLATE
    prompt = gen.prompt(QUESTION, PASSAGES)
    assert prompt.startswith("<|user|>" + SYSTEM_PROMPT)
    assert "<|system|>" not in prompt


def test_generating_reader_streams_then_fills_the_answer(
    generator: Generator, tmp_path: Path
) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(CONTRACT, encoding="utf-8")
    reader = GeneratingReader(RetrievalReader(strategy="bm25", top_k=2), generator)
    index = reader.index([doc])
    answer, pieces = reader.answer_stream(QUESTION, index)
    assert answer.answer == "" and answer.evidence and answer.span is None
    text = "".join(pieces)
    assert answer.answer == text.strip() == generator.generate(QUESTION, answer.evidence)
    assert answer.citations == citations(text, len(answer.evidence))
    assert answer.timings["generate_s"] > 0
    whole = reader.answer(QUESTION, index)
    assert whole.answer == answer.answer and whole.span is None
    assert "citations" in whole.to_json() and "answer_span" not in whole.to_json()


def test_answer_json_has_no_citations_unless_generated() -> None:
    assert "citations" not in Answer("40 euros").to_json()


def cli_args(doc: Path, folder: Path, *extra: str) -> list[str]:
    return [
        str(doc),
        "--ask",
        QUESTION,
        "--generator",
        str(folder),
        "--max-new-tokens",
        "12",
        "--strategy",
        "bm25",
        "--no-rerank",
        "--answer",
        "sentence",
        "--no-progress",
        *extra,
    ]


def test_cli_streams_the_answer_then_the_evidence(
    lm_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(CONTRACT, encoding="utf-8")
    read_main(cli_args(doc, lm_folder, "--json"))
    report = json.loads(capsys.readouterr().out)
    (answer,) = report["answers"]
    assert isinstance(answer["answer"], str) and isinstance(answer["citations"], list)
    assert "generate_s" in answer["timings"] and "answer_span" not in answer
    assert answer["evidence"][0]["source"] == str(doc)

    read_main(cli_args(doc, lm_folder))
    out = capsys.readouterr().out
    assert out.startswith("read 1 document(s)")
    assert f"Q: {QUESTION}\nA: " in out
    assert answer["answer"] in out.split("\nA: ", 1)[1]
    assert "evidence (bm25, " in out and f"  [1] {doc}, chars " in out


def broken_folder(kind: str, lm_folder: Path, tmp_path: Path) -> tuple[Path, str]:
    """A copy of the tiny LM folder with one thing wrong, and what the error must name."""
    folder = tmp_path / "model"
    if kind == "missing":
        return folder, "no such folder"
    shutil.copytree(lm_folder, folder)
    if kind == "config":
        (folder / "config.json").unlink()
        return folder, "no config.json"
    if kind == "architecture":
        config = json.loads((folder / "config.json").read_text())
        config["architectures"] = ["BertForMaskedLM"]
        (folder / "config.json").write_text(json.dumps(config))
        return folder, "BertForMaskedLM"
    if kind == "weights":
        for f in folder.glob("*.safetensors"):
            f.unlink()
        return folder, "no weights"
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    return folder, "no tokenizer"


@pytest.mark.parametrize("kind", ["missing", "config", "architecture", "weights", "tokenizer"])
def test_wrong_folders_are_named(kind: str, lm_folder: Path, tmp_path: Path) -> None:
    folder, missing = broken_folder(kind, lm_folder, tmp_path)
    with pytest.raises(DataError) as err:
        check_folder(folder)
    assert str(folder) in str(err.value) and missing in str(err.value)
    with pytest.raises(DataError, match=missing):
        Generator(folder)


def test_cli_reports_a_wrong_folder(lm_folder: Path, tmp_path: Path) -> None:
    folder, _ = broken_folder("weights", lm_folder, tmp_path)
    doc = tmp_path / "doc.md"
    doc.write_text(CONTRACT, encoding="utf-8")
    with pytest.raises(LongmmError, match="no weights") as err:
        read_main(cli_args(doc, folder))
    assert str(folder) in str(err.value)

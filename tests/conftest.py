"""Shared fixtures: small recipes written into each test's own folder, synthetic
image-and-audio samples, and short CPU runs of a trainer or of a recipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("PYTHONHASHSEED", "0")
# As the longmm command does (torch is not loaded yet): short OpenMP spinning, so that the
# servers, DDP ranks and subprocess fits the tests start do not starve each other.
from longmm.cli import set_openmp_defaults

set_openmp_defaults()

REPO = Path(__file__).resolve().parents[1]
# Options that cut a recipe's fit to a couple of batches; they follow the recipe's own.
SHORT_FIT = [
    "--trainer.max_epochs",
    "1",
    "--trainer.limit_train_batches",
    "2",
    "--trainer.limit_val_batches",
    "1",
    "--trainer.limit_test_batches",
    "1",
    "--trainer.enable_progress_bar",
    "false",
]

TINY_RECIPE = """\
seed_everything: 3
model:
  class_path: longmm.tasks.Classify
  init_args:
    encoders:
      image:
        class_path: longmm.encoders.ArticleCNN
        init_args: {in_channels: 1, image_size: 8, dim: 32, dropout: 0.2}
    optimizer: adamw
    lr: 0.003
    scheduler: cosine
data:
  class_path: longmm.data.ImageData
  init_args:
    format: digits
    split: [0.7, 0.1, 0.2]
    batch_size: 64
    augment:
      class_path: longmm.data.image.ImageAugment
      init_args: {degrees: 5, translate: 0.05}
trainer:
  max_epochs: 3
  enable_progress_bar: false
  enable_model_summary: false
"""


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_RECIPE)
    return path


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs_shared: skipped when ../shared/data is missing")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    for item in items:
        if "needs_shared" in item.keywords and not shared.is_dir():
            item.add_marker(pytest.mark.skip(reason=f"shared data folder {shared} is missing"))


@pytest.fixture
def run_light_main() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runs ``from MODULE import main; main(ARGS)`` in a fresh interpreter, which then fails
    if any module in ``absent`` was imported: the light entry points stay off the training
    stack."""

    def run(
        module: str, args: list[str], absent: Sequence[str] = ("torch",), timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        code = f"import sys\nfrom {module} import main\nmain({args!r})\n" + "".join(
            f"assert {name!r} not in sys.modules, '{name} was imported'\n" for name in absent
        )
        return subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
        )

    return run


def _av_pairs(n: int = 48, seed: int = 0, *, speaker: bool = False, index: bool = True) -> list:
    import torch

    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, 3, (n,), generator=g)
    speakers = torch.randint(0, 2, (n,), generator=g) if speaker else None
    image = torch.randn(n, 1, 8, 8, generator=g) * 0.3 + label.view(-1, 1, 1, 1)
    audio = torch.randn(n, 40, 12, generator=g) * 0.3 + label.view(-1, 1, 1)
    if speakers is not None:
        audio[:, :20] += 2.0 * speakers.view(-1, 1, 1)
    samples = []
    for i in range(n):
        sample = {
            "image": image[i],
            "audio": audio[i],
            "audio_mask": torch.ones(12, dtype=torch.bool),
            "label": label[i],
        }
        if speakers is not None:
            sample["speaker"] = speakers[i]
        if index:
            sample["index"] = torch.tensor(i)
        samples.append(sample)
    return samples


@pytest.fixture
def av_pairs() -> Callable[..., list]:
    """``av_pairs(n=48, seed=0, speaker=False, index=True)``: n samples of an 8x8 image and
    40x12 audio (mask all true) that both carry a label in 0..2; with ``speaker``, the
    audio's first 20 bands also carry a speaker in 0..1; with ``index``, each sample's
    position."""
    return _av_pairs


@pytest.fixture
def av_batch() -> Callable[..., dict]:
    """``av_batch(n=8, **av_pairs_options)``: the same samples stacked into one batch."""
    import torch

    def batch(n: int = 8, **kw: Any) -> dict:
        samples = _av_pairs(n, **kw)
        return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}

    return batch


@pytest.fixture
def av_encoders() -> Callable[[int], dict]:
    """``av_encoders(dim)``: a small ArticleCNN (8x8 images) and AudioCNN (40 mel bands,
    batch norm) built after ``torch.manual_seed(0)``."""
    import torch

    from longmm.encoders import ArticleCNN, AudioCNN

    def encoders(dim: int) -> dict:
        torch.manual_seed(0)
        return {
            "image": ArticleCNN(image_size=8, dim=dim),
            "audio": AudioCNN(n_mels=40, dim=dim, channels=[4, 8], dropout=0.0),
        }

    return encoders


@pytest.fixture
def cpu_trainer(tmp_path: Path) -> Callable[..., Any]:
    """``cpu_trainer(**options)``: a quiet CPU Lightning trainer in the test's folder (no
    logger, checkpoints, progress bar or summary); ``options`` go to ``L.Trainer``."""
    import lightning as L

    def make(**options: Any) -> L.Trainer:
        args = {
            "accelerator": "cpu",
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "default_root_dir": tmp_path,
            **options,
        }
        return L.Trainer(**args)

    return make


@pytest.fixture
def fit_recipe(monkeypatch: pytest.MonkeyPatch) -> Callable[..., dict]:
    """``fit_recipe(name, out, *options, from_repo=False)``: ``longmm fit`` of
    ``recipes/NAME`` cut to two training batches and one of validation and test (SHORT_FIT),
    then ``options``, into ``out``; returns the run's metrics.json. ``from_repo`` runs from
    the repository root, for the recipes that name ../shared/data."""

    def fit(name: str, out: Path, *options: str, from_repo: bool = False) -> dict:
        from longmm.cli import main

        if from_repo:
            monkeypatch.chdir(REPO)
        recipe = REPO / "recipes" / name
        main(["fit", "--config", str(recipe), *SHORT_FIT, *options, "--out", str(out)])
        return json.loads((Path(out) / "metrics.json").read_text())

    return fit


# -- question answering: tiny BERT folders and a tiny qa_train folder ---------------------------
TINY_BERT_HEADS = {
    "base": "BertModel",
    "rerank": "BertForSequenceClassification",
    "qa": "BertForQuestionAnswering",
}


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``tiny_bert(head)``: a saved, randomly initialised 2-layer BERT with ``head`` (``base``,
    ``rerank``: one relevance logit, ``qa``: start/end) and the packaged MiniLM's tokenizer."""
    import shutil

    made: dict[str, Path] = {}

    def make(head: str) -> Path:
        if head in made:
            return made[head]
        import torch
        import transformers

        from longmm.reading.enhance import model_folder

        config = transformers.BertConfig(
            vocab_size=30522,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=512,
            num_labels=1 if head == "rerank" else 2,
        )
        with torch.random.fork_rng():  # leave the global generator as the next test expects
            torch.manual_seed(0)
            model = getattr(transformers, TINY_BERT_HEADS[head])(config)
        folder = tmp_path_factory.mktemp(f"tiny_bert_{head}")
        model.save_pretrained(folder)
        shutil.copy(model_folder() / "tokenizer.json", folder / "tokenizer.json")
        made[head] = folder
        return folder

    return make


def _squad_file(path: Path, articles: list[dict[str, Any]]) -> None:
    import gzip

    with gzip.open(path, "wt", encoding="utf-8") as f:
        json.dump({"data": articles}, f)


def _article(title: str, n: int, impossible_every: int = 3) -> dict[str, Any]:
    paras = []
    for p in range(2):
        facts = [f"The {title} item {p}{k} costs {100 + 7 * k + p} dollars." for k in range(n)]
        context = " ".join(facts) + f" It was built in {1900 + p}."
        qas = []
        for k in range(n):
            answer = str(100 + 7 * k + p)
            qas.append(
                {
                    "id": f"{title}-{p}-{k}",
                    "question": f"How much does the {title} item {p}{k} cost?",
                    "answers": [{"text": answer, "answer_start": context.index(answer)}],
                    "is_impossible": False,
                }
            )
        qas.append(
            {
                "id": f"{title}-{p}-none",
                "question": f"Who painted the {title} item {p}?",
                "answers": [],
                "is_impossible": True,
            }
        )
        paras.append({"context": context, "qas": qas})
    return {"title": title, "paragraphs": paras}


@pytest.fixture(scope="session")
def tiny_qa_train(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A qa_train-shaped folder: 48 small SQuAD articles (so that the fixed held-out split
    applies), 6 policies, 3 COVID-QA papers, 3 Evidence Inference papers, triples and
    passages."""
    root = tmp_path_factory.mktemp("qa_train")
    squad = [_article(f"Article{i}", 2) for i in range(48)]
    _squad_file(root / "squad_dev_v2_merged.json.gz", squad)
    sets = {
        "policyqa_devtest": [_article(f"Policy{i}", 3) for i in range(6)],
        "covidqa": [_article(f"Paper{i}", 3) for i in range(3)],
        "evidence_inference_v2": [_article(f"Trial{i}", 3) for i in range(3)],
    }
    for name, arts in sets.items():
        _squad_file(root / f"{name}.json.gz", arts)
    import gzip

    passages, triples = [], []
    for source, arts in [("squad_dev_v2_merged", squad), *sets.items()]:
        for art in arts:
            pids = []
            for para in art["paragraphs"]:
                pid = f"p{len(passages)}"
                passages.append({"pid": pid, "text": para["context"]})
                pids.append(pid)
            for p, para in enumerate(art["paragraphs"]):
                for qa in para["qas"]:
                    if qa["answers"]:
                        triples.append(
                            {
                                "source": source,
                                "id": qa["id"],
                                "doc": art["title"],
                                "question": qa["question"],
                                "answers": [a["text"] for a in qa["answers"]],
                                "positive": pids[p],
                                "hard_negatives": [x for x in pids if x != pids[p]],
                            }
                        )
    for name, rows in (("passages", passages), ("retrieval_triples", triples)):
        with gzip.open(root / f"{name}.jsonl.gz", "wt", encoding="utf-8") as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows))
    return root

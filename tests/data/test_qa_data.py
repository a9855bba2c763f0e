"""Real-QA data: reading the SQuAD layout and the triples, the fixed held-out split, passage
windows, and the two data modules on a tiny qa_train folder."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

from longmm.data.qa import (
    HELD_OUT_SQUAD,
    passage_window,
    read_squad,
    read_triples,
    split_by_document,
    squad_partition,
)
from longmm.errors import DataError
from longmm.reading.pairs import pair_tokenizer, qa_windows, window_rows

SHARED_SQUAD = Path("../shared/data/qa_train/squad_dev_v2_merged.json.gz")


def test_squad_partition_is_fixed_and_holds_out_eight_articles() -> None:
    titles = [f"T{i}" for i in range(48)]
    split = squad_partition(titles)
    assert split == squad_partition(list(reversed(titles)))  # order does not matter
    assert sum(v == "test" for v in split.values()) == HELD_OUT_SQUAD
    assert sum(v == "val" for v in split.values()) == 3


def test_split_by_document_keeps_documents_whole_and_covidqa_held_out(tiny_qa_train) -> None:
    queries, _ = read_triples(tiny_qa_train)
    titles = sorted({q.doc for q in queries if q.source == "squad_dev_v2_merged"})
    splits = split_by_document(queries, val_docs=1, seed=0, squad_titles=titles)
    docs = {name: {(q.source, q.doc) for q in qs} for name, qs in splits.items()}
    assert not docs["train"] & docs["val"] and not docs["train"] & docs["test"]
    assert all(q.source != "covidqa" for q in splits["train"] + splits["val"])
    assert {q.source for q in splits["test"]} == {"covidqa", "squad_dev_v2_merged"}


def test_read_squad_checks_offsets(tmp_path: Path) -> None:
    bad = {
        "data": [
            {
                "title": "A",
                "paragraphs": [
                    {
                        "context": "The cat sat.",
                        "qas": [
                            {
                                "id": "q1",
                                "question": "Who?",
                                "answers": [{"text": "dog", "answer_start": 4}],
                            }
                        ],
                    }
                ],
            }
        ]
    }
    path = tmp_path / "bad.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump(bad, f)
    with pytest.raises(DataError, match=r"bad.json.gz: question q1.*'dog' is not at offset 4"):
        read_squad(path)
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(DataError, match="junk.json"):
        read_squad(tmp_path / "junk.json")


@pytest.mark.skipif(not SHARED_SQUAD.is_file(), reason="shared qa_train not present")
def test_the_real_squad_file_reads_whole() -> None:
    examples = read_squad(SHARED_SQUAD)
    assert len(examples) == 16515
    assert sum(ex.impossible for ex in examples) == 5945


def test_passage_window_holds_the_answer() -> None:
    text = " ".join(f"w{i}" for i in range(200)) + " the answer is 4242 here " + "x " * 100
    for seed in range(20):
        window = passage_window(text, 30, random.Random(seed), "4242")
        assert "4242" in window and len(window.split()) <= 31
        assert window in text
    assert passage_window("short text", 30, random.Random(0)) == "short text"


def test_qa_windows_map_answers_to_tokens() -> None:
    tok = pair_tokenizer()
    context = " ".join(f"Sentence {i} talks about topic {i}." for i in range(80))
    answer = "topic 61"
    start = context.index(answer)
    windows = window_rows(0, qa_windows(tok, "Which topic?", context, 64, 16), [(answer, start)])
    assert len(windows) > 3 and all(len(w.ids) <= 64 for w in windows)
    hits = [w for w in windows if w.start]
    assert hits, "some window holds the answer"
    for w in hits:
        assert context[w.offsets[w.start][0] : w.offsets[w.end][1]] == answer
    assert all(w.start == w.end == 0 for w in windows if w not in hits)


def test_rerank_data_groups(tiny_qa_train, tiny_bert) -> None:
    from longmm.data.qa_modules import RerankData

    dm = RerankData(
        root=str(tiny_qa_train), negatives=1, tokenizer=str(tiny_bert("base")), batch_size=4
    )
    dm.setup("fit")
    counts = dm.split_counts()
    assert counts["test"]["by_source"].keys() == {"covidqa", "squad_dev_v2_merged"}
    batch = next(iter(dm.train_dataloader()))
    b, g = batch["candidates"].shape
    assert g == 2 and batch["input_ids"].shape[0] == b * g
    group = dm.datasets["test"][0]
    assert len(group.rows) >= 2  # every hard negative at test time


def test_qa_data_refuses_covidqa_as_training(tiny_qa_train) -> None:
    from longmm.data.qa_modules import QAData

    with pytest.raises(DataError, match="held out"):
        QAData(root=str(tiny_qa_train), sources=["covidqa"])
    with pytest.raises(DataError, match="not a folder"):
        QAData(root="/nonexistent/qa").setup()


def test_qa_data_adds_generated_facts_to_training_only(tiny_qa_train, tiny_bert) -> None:
    from longmm.data.qa_modules import QAData

    dm = QAData(root=str(tiny_qa_train), tokenizer=str(tiny_bert("base")), facts=40)
    plain = QAData(root=str(tiny_qa_train), tokenizer=str(tiny_bert("base")))
    facts = [ex for ex in dm.examples["train"] if ex.source == "facts"]
    assert len(facts) == 40 and len(dm.examples["train"]) == len(plain.examples["train"]) + 40
    assert all(ex.source != "facts" for name in ("val", "test") for ex in dm.examples[name])
    assert any(ex.impossible for ex in facts) and not all(ex.impossible for ex in facts)
    for ex in facts:
        for text, start in ex.answers:
            assert ex.context[start : start + len(text)] == text
    dm.setup("fit")
    assert dm.split_counts()["train"]["by_source"]["facts"] == 40

"""The retrieval reader: BM25, dense and hybrid evidence, offsets, answers, the CLI."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from longmm.cli import main as cli_main
from longmm.errors import DataError
from longmm.reading import text_document
from longmm.reading.answer import (
    AnswerExtractor,
    AnswerSpan,
    BestSentence,
    Evidence,
    SentenceFocus,
)
from longmm.reading.reader import RetrievalReader
from longmm.reading.retrieve import DenseEncoder, reciprocal_rank_fusion, top_k

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."

CONTRACT = """# Lease agreement

## Parties

This lease is made between Northwind Properties, the landlord, and Ada Lovelace, the tenant.

## Rent

The tenant pays a monthly rent of 1,450 euros on the first day of each month. Late payment
incurs a fee of 40 euros. The deposit equals two months of rent.

## Repairs

The landlord is responsible for structural repairs and for the heating system. The tenant
repairs any damage caused by guests or pets, and keeps the garden tidy.

## Termination

Either party may end the lease with three months of written notice.
"""

ENCYCLOPEDIA = """Saturn

Saturn is the sixth planet from the Sun and the second largest in the Solar System, after
Jupiter. It is a gas giant with an average radius about nine times that of Earth.

Rings

Saturn's rings are made almost entirely of water ice, with a small amount of rocky debris and
dust. They extend from 7,000 km to 80,000 km above the planet's equator.

Moons

Saturn has 146 moons with confirmed orbits. Titan, the largest, is bigger than the planet
Mercury and is the only moon in the Solar System with a substantial atmosphere.
"""


def haystack(n_sentences: int, key: int, depth: float) -> str:
    parts = [FILLER] * (n_sentences // 5)
    parts.insert(
        int(len(parts) * depth), f"The pass key is {key}. Remember it. {key} is the pass key."
    )
    return " ".join(parts)


@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_bm25_finds_the_passkey_and_cites_it(depth: float) -> None:
    text = haystack(3000, 48213, depth)
    doc = text_document(text, "haystack")
    reader = RetrievalReader(strategy="bm25", top_k=3)
    answer = reader.answer("What is the pass key?", [doc])
    assert "48213" in answer.answer
    best = answer.evidence[0]
    assert "48213" in best.text
    for ev in answer.evidence:
        assert ev.text == doc.text[ev.start : ev.end]
        assert ev.source == "haystack" and ev.page is None
    span = answer.span
    assert span is not None and doc.text[span.start : span.end] == answer.answer
    assert answer.seconds > 0 and set(answer.timings) >= {"index_s", "rank_s"}


def test_json_has_the_documented_shape() -> None:
    doc = text_document(CONTRACT, "lease.md", markdown=True)
    out = RetrievalReader(strategy="bm25").answer("How much is the monthly rent?", [doc]).to_json()
    assert {"answer", "evidence", "seconds"} <= set(out)
    ev = out["evidence"][0]
    assert set(ev) >= {"text", "source", "start", "end", "page", "score"}
    assert "1,450 euros" in ev["text"] and ev["source"] == "lease.md"
    assert ev["section"] == "Lease agreement > Rent"
    json.dumps(out)  # serialisable as is


@pytest.fixture(scope="module")
def torch_encoder() -> DenseEncoder:
    return DenseEncoder(backend="torch")


def test_hybrid_reads_several_documents(torch_encoder: DenseEncoder) -> None:
    docs = [
        text_document(CONTRACT, "lease.md", markdown=True),
        text_document(ENCYCLOPEDIA, "saturn.txt"),
        text_document(haystack(400, 11111, 0.3), "filler.txt"),
    ]
    reader = RetrievalReader(strategy="hybrid", top_k=2, encoder=torch_encoder)
    index = reader.index(docs)
    assert index.n_chunks > 10
    cases = [
        ("Who has to fix the boiler?", "lease.md", "heating system"),
        ("What are the planet's rings made of?", "saturn.txt", "water ice"),
        ("Which moon has an atmosphere?", "saturn.txt", "Titan"),
        ("How much notice ends the lease?", "lease.md", "three months"),
    ]
    for question, source, needle in cases:
        answer = reader.answer(question, index)
        top = answer.evidence[0]
        assert top.source == source, (question, top)
        assert needle in top.text, (question, top.text)
        d = top.doc
        assert top.text == docs[d].text[top.start : top.end]
    # Every strategy answers from the same index type.
    dense = RetrievalReader(strategy="dense", top_k=1, encoder=torch_encoder)
    assert "water ice" in dense.answer("What are Saturn's rings made of?", docs).evidence[0].text


def test_hybrid_on_large_inputs_reranks_bm25_candidates(torch_encoder: DenseEncoder) -> None:
    doc = text_document(CONTRACT, "lease.md", markdown=True)
    reader = RetrievalReader(
        strategy="hybrid", encoder=torch_encoder, dense_all_max=3, rerank_depth=4, top_k=1
    )
    index = reader.index([doc])
    assert index.n_chunks > 4 and not index.chunk_vectors.done.any()
    reader.rank("What is the late payment fee?", index)
    assert index.chunk_vectors.done.sum() == 4  # only BM25's best 4 were embedded
    # No question word anywhere: BM25 cannot choose, so every chunk is embedded.
    reader.rank("Who owns the flat?", index)
    assert index.chunk_vectors.done.all()


def test_evidence_grows_around_the_hit_within_its_section() -> None:
    doc = text_document(CONTRACT, "lease.md", markdown=True)
    reader = RetrievalReader(strategy="bm25", top_k=1, passage_tokens=200)
    ev = reader.answer("What is the late payment fee?", [doc]).evidence[0]
    assert "40 euros" in ev.text
    assert "deposit equals two months" in ev.text  # the rest of the section joined
    assert "structural repairs" not in ev.text  # never across the heading
    assert ev.section == ("Lease agreement", "Rent")


class FirstNumber:
    """A toy extractor to show the plug-in point: the first number in the best passage."""

    def extract(self, question: str, passages: Sequence[Evidence]) -> AnswerSpan | None:
        import re

        m = re.search(r"\d[\d,]*", passages[0].text)
        if m is None:
            return None
        p = passages[0]
        return AnswerSpan(m[0], 0, p.start + m.start(), p.start + m.end(), 1.0)


def test_answer_extractors_plug_in() -> None:
    assert isinstance(FirstNumber(), AnswerExtractor)
    doc = text_document(CONTRACT, "lease.md", markdown=True)
    reader = RetrievalReader(strategy="bm25", extractor=FirstNumber())
    answer = reader.answer("How much is the monthly rent?", [doc])
    assert answer.answer == "1,450"
    assert doc.text[answer.span.start : answer.span.end] == "1,450"


def test_bad_questions_and_settings() -> None:
    doc = text_document(CONTRACT)
    with pytest.raises(DataError, match="empty question"):
        RetrievalReader(strategy="bm25").answer("  ", [doc])
    with pytest.raises(ValueError, match="strategy must be one of"):
        RetrievalReader(strategy="magic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="passage_tokens"):
        RetrievalReader(passage_tokens=10)
    with pytest.raises(DataError, match="no documents"):
        RetrievalReader(strategy="bm25").answer("why?", [])


def test_fusion_and_top_k() -> None:
    fused = reciprocal_rank_fusion([[1, 2, 3], [3, 2, 4]], k=60)
    assert {i for i, _ in fused[:2]} == {2, 3}  # found high by both
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 63)
    assert {i for i, _ in fused} == {1, 2, 3, 4}
    scores = np.array([0.1, 0.9, 0.5, 0.9])
    assert top_k(scores, 3) == [(1, 0.9), (3, 0.9), (2, 0.5)]


def test_encoder_dedupes_and_normalises(torch_encoder: DenseEncoder) -> None:
    vecs = torch_encoder.encode(["a cat", "a dog", "a cat"])
    assert vecs.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(vecs[0], vecs[2])


def test_cli_read_text_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "lease.md"
    path.write_text(CONTRACT, encoding="utf-8")
    cli_main(["read", str(path), "--ask", "What is the late payment fee?", "--strategy", "bm25"])
    out = capsys.readouterr().out
    assert "Q: What is the late payment fee?" in out and "40 euros" in out
    assert f"[1] {path}, chars " in out and "section Lease agreement > Rent" in out
    cli_main(["read", str(path), "--ask", "Who is the tenant?", "--strategy", "bm25", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["documents"] == [{"source": str(path), "chars": len(CONTRACT.strip())}]
    data = report["answers"][0]
    assert "Ada Lovelace" in data["evidence"][0]["text"]
    assert data["evidence"][0]["source"] == str(path)
    text = CONTRACT
    ev = data["evidence"][0]
    assert ev["text"] == text.strip()[ev["start"] : ev["end"]] or ev["text"] in text


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(SystemExit) as exc:
        cli_main(["read", str(empty), "--ask", "anything?"])
    assert exc.value.code == 2
    assert f"error: {empty}: empty document" in capsys.readouterr().err


@pytest.mark.slow
def test_onnx_int8_matches_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LONGMM_CACHE", str(tmp_path))
    texts = [CONTRACT[i : i + 300] for i in range(0, len(CONTRACT), 150)] + [ENCYCLOPEDIA]
    ref = DenseEncoder(backend="torch").encode(texts)
    fp32 = DenseEncoder(backend="onnx").encode(texts)
    int8 = DenseEncoder(backend="onnx-int8").encode(texts)
    assert (ref * fp32).sum(1).min() > 0.9999
    assert (ref * int8).sum(1).min() > 0.98
    assert list(tmp_path.rglob("model-int8.onnx"))


@pytest.mark.slow
def test_passkey_at_one_million_tokens() -> None:
    rng = random.Random(0)
    key = rng.randint(10000, 99999)
    doc = text_document(haystack(230_000, key, 0.42), "1M")
    answer = RetrievalReader(strategy="hybrid").answer("What is the pass key?", [doc])
    assert str(key) in answer.answer
    assert answer.seconds < 60


QASPER = Path(__file__).resolve().parents[3] / "shared" / "data" / "leval_qasper"


@pytest.mark.slow
@pytest.mark.skipif(not QASPER.is_dir(), reason=f"{QASPER} not present")
def test_qasper_evidence_hit_rate() -> None:
    from longmm.bench.longqa import load_papers, run_papers
    from longmm.reading.pipeline import build_reader

    summary = run_papers(load_papers("qasper", QASPER), build_reader())["summary"]
    assert summary["counted_questions"] == 58 and summary["questions"] == 184
    assert summary["evidence_hit_rate"] >= 0.75  # see docs/results.md


def test_sentence_focus_reads_only_the_best_sentences() -> None:
    class FirstWord:
        """Answers with the first word of the first piece; records what it was given."""

        def __init__(self) -> None:
            self.seen: list[str] = []

        def extract(self, question: str, passages: Sequence[Evidence]) -> AnswerSpan | None:
            self.seen = [p.text for p in passages]
            p = passages[0]
            end = p.text.index(" ")
            return AnswerSpan(p.text[:end], 0, p.start, p.start + end, 1.0)

    other = "Rain fell on the town. Nobody went out. The shops were closed."
    text = "The mill is old. The river runs fast. The pass key is 7781. Remember it. Birds sing."
    passages = [Evidence(other, "a", 0, len(other)), Evidence(text, "b", 500, 500 + len(text))]
    inner = FirstWord()
    focus = SentenceFocus(BestSentence(), inner, top=1, context=1)
    span = focus.extract("What is the pass key?", passages)
    assert inner.seen == ["The river runs fast. The pass key is 7781. Remember it."]
    assert span is not None and span.evidence == 1  # the index of the passage it came from
    assert text[span.start - 500 : span.end - 500] == span.text == "The"
    # Two best sentences next to each other make one piece, not two overlapping ones.
    SentenceFocus(BestSentence(), inner, top=2, context=1).extract("pass key remember", passages)
    assert len(inner.seen) == 1 and "7781" in inner.seen[0]
    with pytest.raises(ValueError, match="top"):
        SentenceFocus(BestSentence(), inner, top=0)


def test_answer_and_evidence_cite_the_pages_they_are_on() -> None:
    page1 = "Lease terms. The tenant keeps the garden tidy. The landlord paints the hall."
    page2 = "The pass key is 5521. The boiler is serviced every spring."
    doc = text_document(f"{page1}\n{page2}", "lease.pdf")
    doc.page_starts = [0, len(page1) + 1]
    reader = RetrievalReader(strategy="bm25", top_k=1, passage_tokens=256)
    answer = reader.answer("What is the pass key?", [doc])
    (ev,) = answer.evidence
    assert (ev.page, ev.last_page) == (1, 2)  # the passage runs across the page break
    assert answer.span is not None and answer.span.start > len(page1)
    assert answer.span.page == 2  # the answer itself is on page 2
    row = answer.to_json()
    assert row["answer_span"]["page"] == 2
    assert (row["evidence"][0]["page"], row["evidence"][0]["last_page"]) == (1, 2)

"""Real question-answering data for the re-ranker and the answer model.

Reads the SQuAD-v2 layout (``{"data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}``,
gzipped or not) and the re-ranking triples of ``../shared/data/qa_train`` (see its SOURCE.md),
and splits them by document so that no article, policy or paper is in two splits.

Held out, never trained or tuned on: every COVID-QA paper, and a fixed set of SQuAD articles
(:func:`squad_partition`: the 48 titles shuffled with seed ``HELD_OUT_SEED``, the first 8 held
out, the next 3 for validation). PolicyQA and Evidence Inference are split by document with
the data module's seed.
"""

from __future__ import annotations

import gzip
import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longmm.errors import DataError

HELD_OUT_SEED = 0
HELD_OUT_SQUAD = 8
VAL_SQUAD = 3
HELD_OUT_SOURCES = frozenset({"covidqa"})
SQUAD = "squad_dev_v2_merged"
FILES = {
    SQUAD: "squad_dev_v2_merged.json.gz",
    "policyqa_devtest": "policyqa_devtest.json.gz",
    "covidqa": "covidqa.json.gz",
    "evidence_inference_v2": "evidence_inference_v2.json.gz",
}


@dataclass(frozen=True)
class QAExample:
    """One question about one context; ``answers`` are ``(text, char start)`` pairs (empty
    when the context does not answer it)."""

    id: str
    source: str
    doc: str
    question: str
    context: str
    answers: tuple[tuple[str, int], ...]

    @property
    def impossible(self) -> bool:
        return not self.answers


@dataclass(frozen=True)
class RerankQuery:
    """A question, the passage that answers it and passages of the same document that do not."""

    id: str
    source: str
    doc: str
    question: str
    answers: tuple[str, ...]
    positive: str
    negatives: tuple[str, ...]


def _open_json(path: Path) -> Any:
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(str(path), "file not found") from None
    except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(str(path), f"not a readable (gzipped) JSON file: {exc}") from exc


def _jsonl(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield n, json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{path}:{n}", f"not a JSON line: {exc}") from exc
    except FileNotFoundError:
        raise DataError(str(path), "file not found") from None
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(str(path), f"not a readable (gzipped) JSON lines file: {exc}") from exc


def read_squad(path: str | Path, source: str | None = None) -> list[QAExample]:
    """Every question of a SQuAD-layout file; each answer offset is checked against its context."""
    path = Path(path)
    source = source or path.name.split(".")[0]
    data = _open_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DataError(str(path), "expected an object with a 'data' list (SQuAD layout)")
    out: list[QAExample] = []
    for a, article in enumerate(data["data"]):
        title = str(article.get("title", a))
        for p, para in enumerate(article.get("paragraphs", [])):
            context = para.get("context")
            if not isinstance(context, str):
                raise DataError(f"{path}: data[{a}].paragraphs[{p}]", "field 'context' missing")
            for qa in para.get("qas", []):
                answers = []
                for ans in [] if qa.get("is_impossible") else qa.get("answers", []):
                    text, start = ans.get("text"), ans.get("answer_start")
                    if not isinstance(text, str) or not isinstance(start, int):
                        raise DataError(f"{path}: question {qa.get('id')}", "bad answer entry")
                    if context[start : start + len(text)] != text:
                        raise DataError(
                            f"{path}: question {qa.get('id')}",
                            f"answer {text!r} is not at offset {start} of its context",
                        )
                    answers.append((text, start))
                out.append(
                    QAExample(
                        id=str(qa.get("id")),
                        source=source,
                        doc=title,
                        question=str(qa.get("question", "")).strip(),
                        context=context,
                        answers=tuple(dict.fromkeys(answers)),
                    )
                )
    return out


def read_triples(root: str | Path) -> tuple[list[RerankQuery], dict[str, str]]:
    """The re-ranking queries and the passage texts (by pid) of a ``qa_train`` folder."""
    root = Path(root)
    passages = {}
    for n, row in _jsonl(root / "passages.jsonl.gz"):
        if "pid" not in row or "text" not in row:
            raise DataError(f"{root / 'passages.jsonl.gz'}:{n}", "needs fields 'pid' and 'text'")
        passages[str(row["pid"])] = str(row["text"])
    queries = []
    where = root / "retrieval_triples.jsonl.gz"
    for n, row in _jsonl(where):
        try:
            q = RerankQuery(
                id=str(row["id"]),
                source=str(row["source"]),
                doc=str(row["doc"]),
                question=str(row["question"]).strip(),
                answers=tuple(row["answers"]),
                positive=str(row["positive"]),
                negatives=tuple(str(p) for p in row["hard_negatives"]),
            )
        except KeyError as exc:
            raise DataError(f"{where}:{n}", f"field {exc.args[0]!r} missing") from None
        missing = [p for p in (q.positive, *q.negatives) if p not in passages]
        if missing:
            raise DataError(f"{where}:{n}", f"unknown passage ids {missing[:3]}")
        queries.append(q)
    return queries, passages


def squad_partition(titles: Iterable[str]) -> dict[str, str]:
    """``{title: "test" | "val" | "train"}``: the fixed held-out SQuAD articles (test), the
    validation articles, and the rest."""
    order = sorted(set(titles))
    random.Random(HELD_OUT_SEED).shuffle(order)
    split = {}
    for i, t in enumerate(order):
        split[t] = (
            "test" if i < HELD_OUT_SQUAD else "val" if i < HELD_OUT_SQUAD + VAL_SQUAD else "train"
        )
    return split


def document_split(
    source: str, docs: Sequence[str], val_docs: int, seed: int, squad: dict[str, str]
) -> dict[str, str]:
    """Which split each document of ``source`` is in. COVID-QA is all test (held out); SQuAD
    follows :func:`squad_partition`; other sources give ``val_docs`` documents to validation."""
    if source in HELD_OUT_SOURCES:
        return dict.fromkeys(docs, "test")
    if source == SQUAD:
        return {d: squad[d] for d in docs}
    order = sorted(set(docs))
    random.Random(f"{seed}:{source}").shuffle(order)
    return {d: "val" if i < val_docs else "train" for i, d in enumerate(order)}


def split_by_document(
    items: Sequence[Any], val_docs: int, seed: int, squad_titles: Iterable[str]
) -> dict[str, list[Any]]:
    """Items (with ``source`` and ``doc``) into train/val/test, whole documents at a time."""
    squad = squad_partition(squad_titles)
    by_source: dict[str, list[str]] = {}
    for item in items:
        by_source.setdefault(item.source, []).append(item.doc)
    where = {
        (s, d): split
        for s, docs in by_source.items()
        for d, split in document_split(s, docs, val_docs, seed, squad).items()
    }
    out: dict[str, list[Any]] = {"train": [], "val": [], "test": []}
    for item in items:
        out[where[(item.source, item.doc)]].append(item)
    return out


def subsample(items: Sequence[Any], limit: int | None, seed: int) -> list[Any]:
    """At most ``limit`` items, drawn with ``seed`` (all, in order, when ``limit`` is None)."""
    if limit is None or limit >= len(items):
        return list(items)
    rng = random.Random(seed)
    return [items[i] for i in sorted(rng.sample(range(len(items)), limit))]


# -- passage windows for re-ranking ------------------------------------------------------------
_WORDS = re.compile(r"\S+")


def passage_window(text: str, words: int, rng: random.Random, answer: str | None = None) -> str:
    """A window of about ``words`` whole words of ``text``: around an occurrence of ``answer``
    when given (at a random place inside the window), else at a random place. The reader
    re-ranks short chunks, so the re-ranker trains on pieces of that size."""
    spans = [m.span() for m in _WORDS.finditer(text)]
    if len(spans) <= words:
        return text
    if answer:
        at = text.find(answer)
        if at >= 0:
            first = next(i for i, (_, e) in enumerate(spans) if e > at)
            last = (
                next((i for i, (s, _) in enumerate(spans) if s >= at + len(answer)), len(spans)) - 1
            )
            lo = max(0, last - words + 1)
            hi = min(first, len(spans) - words)
            begin = rng.randint(lo, max(lo, hi))
            return text[spans[begin][0] : spans[min(begin + words, len(spans)) - 1][1]]
    begin = rng.randint(0, len(spans) - words)
    return text[spans[begin][0] : spans[begin + words - 1][1]]


def qa_root(root: str | Path) -> Path:
    path = Path(root)
    if not path.is_dir():
        raise DataError(str(path), "not a folder (give the qa_train folder)")
    return path


def read_sources(root: Path, sources: Sequence[str]) -> list[QAExample]:
    unknown = [s for s in sources if s not in FILES]
    if unknown:
        raise DataError("data.sources", f"unknown sources {unknown} (known: {sorted(FILES)})")
    return [ex for s in sources for ex in read_squad(root / FILES[s], s)]

"""``longmm read``: answer questions about long documents, with cited evidence.

longmm read paper.pdf --ask "How big is the dataset?"
longmm read notes.md report.html --ask "Who signed the contract?" --strategy bm25 --json
longmm read essays/ --ask "What is the pass key?" --ask "Who wrote it?" --top-k 5
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from typing import Any

from longmm.errors import LongmmError

PROGRESS_MIN_CHARS = 500_000  # show a progress bar from about 100K tokens on


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="longmm read",
        description=(
            "Answer questions about documents (txt, md, html, pdf, multimodal jsonl; folders "
            "give their documents) from retrieved evidence passages, with their offsets."
        ),
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="documents or folders")
    parser.add_argument(
        "--ask", action="append", required=True, metavar="QUESTION", help="a question (repeatable)"
    )
    parser.add_argument(
        "--strategy",
        default="hybrid",
        choices=("bm25", "dense", "hybrid"),
        help="retrieval: BM25, dense MiniLM, or both fused (default hybrid)",
    )
    parser.add_argument("--top-k", type=int, default=3, help="evidence passages (default 3)")
    parser.add_argument(
        "--passage-tokens", type=int, default=256, help="evidence passage size (default 256)"
    )
    parser.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "torch", "onnx", "onnx-int8"),
        help="dense encoder runtime (default auto: int8 ONNX when onnxruntime is installed)",
    )
    parser.add_argument(
        "--answer",
        default="span",
        choices=("span", "sentence"),
        help=(
            "how the answer is taken from the evidence: the trained span head, which also "
            "reads figures and audio clips of multimodal documents, falling back to the best "
            "sentence when no span is confident (default); or the best evidence sentence "
            "alone (no model, starts fastest)"
        ),
    )
    parser.add_argument(
        "--max-chars",
        type=int,
        default=None,
        help="refuse documents longer than this many characters (default 40M)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(args: list[str]) -> None:
    from longmm.reading.ingest import DEFAULT_MAX_CHARS, load_documents
    from longmm.reading.reader import build_reader

    parser = build_parser()
    opts = parser.parse_args(args)
    if opts.top_k < 1:
        parser.error(f"--top-k must be at least 1, got {opts.top_k}")
    questions = [q.strip() for q in opts.ask]
    if not all(questions):
        parser.error("--ask needs a non-empty question")
    try:
        reader = build_reader(
            answer=opts.answer,
            strategy=opts.strategy,
            top_k=opts.top_k,
            passage_tokens=opts.passage_tokens,
            backend=opts.backend,
        )
    except ValueError as exc:
        raise LongmmError(str(exc)) from exc
    docs = load_documents(opts.paths, max_chars=opts.max_chars or DEFAULT_MAX_CHARS)
    total = sum(len(d.text) for d in docs)
    show = not opts.no_progress and total >= PROGRESS_MIN_CHARS and sys.stderr.isatty()
    with _ProgressBar(show) as progress:
        index = reader.index(docs, progress)
        answers = []
        for question in questions:
            answer = reader.answer(question, index, progress)
            answer.seconds += index.seconds / len(questions)  # each pays its share of indexing
            answers.append(answer)
    if opts.json:
        rows = [a.to_json() for a in answers]
        out: Any = rows[0] if len(rows) == 1 else rows
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return
    n_chunks = getattr(index, "index", index).n_chunks  # a MultimodalIndex wraps the text index
    print(
        f"read {len(docs)} document(s), {total:,} characters, {n_chunks:,} chunks "
        f"in {index.seconds:.2f} s"
    )
    for answer in answers:
        print(format_answer(answer))


def format_answer(answer: Any) -> str:
    lines = [
        "",
        f"Q: {answer.question}",
        f"A: {answer.answer or '(no answer found)'}",
    ]
    sentence = " ".join(answer.sentence().split())
    if sentence and sentence != " ".join(answer.answer.split()):
        lines.extend(
            textwrap.wrap(
                f"in [{answer.span.evidence + 1}]: {sentence}",
                96,
                initial_indent="   ",
                subsequent_indent="      ",
            )
        )
    lines.append(f"evidence ({answer.strategy}, {answer.seconds:.2f} s):")
    for i, ev in enumerate(answer.evidence, 1):
        where = [ev.source, f"chars {ev.start}-{ev.end}"]
        if ev.page is not None:
            last = ev.page if ev.last_page is None else ev.last_page
            where.append(f"page {ev.page}" if last == ev.page else f"pages {ev.page}-{last}")
        if ev.section:
            where.append("section " + " > ".join(ev.section))
        where.append(f"score {ev.score:.4f}")
        lines.append(f"  [{i}] " + ", ".join(where))
        text = " ".join(ev.text.split())
        if len(text) > 600:
            text = text[:600] + " ..."
        lines.extend(textwrap.wrap(text, 96, initial_indent="      ", subsequent_indent="      "))
    return "\n".join(lines)


class _ProgressBar:
    """A rich progress bar on stderr for chunking and embedding, or nothing."""

    def __init__(self, show: bool) -> None:
        self.show = show
        self.bar: Any = None
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> Any:
        if not self.show:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self.bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self.bar.start()
        return self.update

    def update(self, stage: str, done: int, total: int) -> None:
        label = {"chunk": "chunking documents", "embed": "embedding passages"}.get(stage, stage)
        if stage not in self.tasks or self.bar.tasks[self.tasks[stage]].total != total:
            self.tasks[stage] = self.bar.add_task(label, total=total)
        self.bar.update(self.tasks[stage], completed=done)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


if __name__ == "__main__":  # `python -m longmm.commands.read`: skips the training stack's imports
    try:
        main(sys.argv[1:])
    except LongmmError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)

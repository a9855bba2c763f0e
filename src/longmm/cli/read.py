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
    add_model_options(parser)
    parser.add_argument(
        "--max-chars",
        type=int,
        default=None,
        help="refuse documents longer than this many characters (default 40M)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """How the answer is found: the answer mode, the re-ranker and models of one's own."""
    parser.add_argument(
        "--answer",
        default="qa",
        choices=("span", "qa", "sentence"),
        help=(
            "how the answer is taken from the evidence: 'qa' (default), the extractive "
            "answer model trained on real questions (SQuAD 2.0, PolicyQA) and generated "
            "facts, its best span over the evidence when that beats its calibrated 'no "
            "answer' score, else the best sentence; 'span', the span head trained on "
            "generated fact questions only, reading the best evidence sentences; "
            "'sentence', the best evidence sentence alone. Figures and audio clips of "
            "multimodal documents are "
            "read by their encoders except with 'sentence'"
        ),
    )
    parser.add_argument(
        "--no-rerank",
        action="store_true",
        help=(
            "skip the cross-encoder re-ranker (faster; with --strategy bm25 --answer sentence "
            "nothing imports torch)"
        ),
    )
    parser.add_argument(
        "--reranker",
        default=None,
        metavar="DIR",
        help=(
            "re-ranker to use instead of the packaged one: a local Hugging Face "
            "cross-encoder folder (...ForSequenceClassification), or a run folder / adapter "
            "file of recipes/reranker.yaml"
        ),
    )
    parser.add_argument(
        "--answer-model",
        default=None,
        metavar="DIR",
        help=(
            "answer model to use instead of the packaged one: a local Hugging Face extractive "
            "QA folder (...ForQuestionAnswering), or a run folder / adapter file of "
            "recipes/answer_qa.yaml (implies --answer qa)"
        ),
    )
    parser.add_argument(
        "--generator",
        default=None,
        metavar="DIR",
        help=(
            "write the answer with a generator: a local Hugging Face causal language model "
            "folder (a small instruct model, ...ForCausalLM: config.json, weights, tokenizer "
            "files) that answers from the top evidence passages, citing them as [1], [2], ...; "
            "in text mode the answer streams as it is written"
        ),
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=200,
        metavar="N",
        help="most tokens the --generator writes per answer (default 200)",
    )


def reader_from_options(opts: argparse.Namespace, **extra: Any) -> Any:
    """The reader the retrieval and answer options of ``longmm read`` (also taken by the
    long-document benchmarks) ask for; ``extra`` goes to ``build_reader`` as it is."""
    from longmm.reading.pipeline import build_reader

    return build_reader(
        answer=opts.answer,
        strategy=opts.strategy,
        top_k=opts.top_k,
        passage_tokens=opts.passage_tokens,
        backend=opts.backend,
        rerank=not opts.no_rerank,
        reranker=opts.reranker,
        answer_model=opts.answer_model,
        **extra,
    )


def main(args: list[str]) -> None:
    from longmm.reading.ingest import DEFAULT_MAX_CHARS, load_documents

    parser = build_parser()
    opts = parser.parse_args(args)
    if opts.top_k < 1:
        parser.error(f"--top-k must be at least 1, got {opts.top_k}")
    if opts.max_new_tokens < 1:
        parser.error(f"--max-new-tokens must be at least 1, got {opts.max_new_tokens}")
    questions = [q.strip() for q in opts.ask]
    if not all(questions):
        parser.error("--ask needs a non-empty question")
    try:
        reader = reader_from_options(
            opts, generator=opts.generator, max_new_tokens=opts.max_new_tokens
        )
    except ValueError as exc:
        raise LongmmError(str(exc)) from exc
    docs = load_documents(opts.paths, max_chars=opts.max_chars or DEFAULT_MAX_CHARS)
    total = sum(len(d.text) for d in docs)
    show = not opts.no_progress and total >= PROGRESS_MIN_CHARS and sys.stderr.isatty()
    with _ProgressBar(show) as progress:
        index = reader.index(docs, progress)
        answers = []
        streams = []  # with a generator in text mode: its answers' pieces, written later
        for question in questions:
            if opts.generator is not None and not opts.json:
                answer, pieces = reader.answer_stream(question, index, progress)
                streams.append(pieces)
            else:
                answer = reader.answer(question, index, progress)
            answer.seconds += index.seconds / len(questions)  # each pays its share of indexing
            answers.append(answer)
    n_chunks = getattr(index, "index", index).n_chunks  # a MultimodalIndex wraps the text index
    if opts.json:
        print(
            json.dumps(
                json_report(docs, n_chunks, index.seconds, answers), indent=2, ensure_ascii=False
            )
        )
        return
    print(
        f"read {len(docs)} document(s), {total:,} characters, {n_chunks:,} chunks "
        f"in {index.seconds:.2f} s"
    )
    for n, answer in enumerate(answers):
        if streams:
            print_streamed(answer, streams[n])
        else:
            print(format_answer(answer))


def json_report(docs: list[Any], chunks: int, seconds: float, answers: list[Any]) -> dict[str, Any]:
    """What ``--json`` prints, one shape for any number of questions: the documents read,
    the index size and time, and one answer object per question in the order asked."""
    return {
        "documents": [{"source": d.source, "chars": len(d.text)} for d in docs],
        "chunks": chunks,
        "index_seconds": round(seconds, 4),
        "answers": [a.to_json() for a in answers],
    }


def print_streamed(answer: Any, pieces: Any) -> None:
    """Print the question, the generated answer piece by piece as it comes, then the
    evidence (``answer`` is complete once ``pieces`` runs out)."""
    print(f"\nQ: {answer.question}\nA: ", end="", flush=True)
    started = False
    for piece in pieces:
        if not started:
            piece = piece.lstrip()
            started = bool(piece)
        print(piece, end="", flush=True)
    print("" if started else "(no answer found)")
    print(format_answer(answer, streamed=True))


def format_answer(answer: Any, streamed: bool = False) -> str:
    """The answer and its evidence as text; ``streamed``: without the question and answer
    lines, already printed as the answer was generated."""
    lines = [
        "",
        f"Q: {answer.question}",
        f"A: {answer.answer or '(no answer found)'}",
    ]
    if streamed:
        lines = []
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


if __name__ == "__main__":  # `python -m longmm.cli.read`
    try:
        main(sys.argv[1:])
    except LongmmError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)

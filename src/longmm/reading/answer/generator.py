"""Bring your own generator: a local Hugging Face causal language model writes the answer.

The reader retrieves evidence as usual; :class:`Generator` then asks a small instruct model
(a folder with ``config.json``, weights and tokenizer files) to answer from the best
passages only, citing them as ``[1]``, ``[2]``, ... (their numbers in the evidence list).
:class:`GeneratingReader` wraps any reader with ``index``/``answer`` so that its answer text
comes from the generator, whole (:meth:`~GeneratingReader.answer`) or token by token
(:meth:`~GeneratingReader.answer_stream`).

torch and transformers are imported inside the methods that need them, so that importing
this module stays cheap.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from longmm.errors import DataError
from longmm.reading.answer.base import Answer, Evidence

SYSTEM_PROMPT = (
    "You answer questions about documents using only the numbered passages you are given. "
    "Cite the passages that support each statement by their numbers in square brackets, "
    "like [1] or [2]. If the passages do not hold the answer, say that you cannot find it "
    "in the documents. Answer briefly."
)
CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")  # GPT-2 style folders say GPT2LMHeadModel
_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")


def check_folder(folder: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a causal LM folder, or a :class:`DataError` naming the
    folder and what it lacks (the folder, config.json, a causal LM architecture, weights,
    tokenizer files)."""
    path = Path(folder)
    where = str(folder)
    if not path.is_dir():
        raise DataError(where, "no such folder (expected a local Hugging Face causal LM folder)")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise DataError(where, "no config.json (not a Hugging Face model folder)")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(where, f"config.json cannot be read: {exc}") from exc
    if not isinstance(config, dict):
        raise DataError(where, "config.json is not a JSON object")
    architectures = config.get("architectures")
    # A folder without `architectures` is left to AutoModelForCausalLM to accept or refuse.
    if architectures is not None and not any(
        isinstance(a, str) and a.endswith(CAUSAL_SUFFIXES) for a in architectures
    ):
        raise DataError(
            where,
            f"config.json architectures {architectures} are not a causal language model "
            "(expected ...ForCausalLM)",
        )
    if not any(path.glob("*.safetensors")) and not any(path.glob("pytorch_model*.bin")):
        raise DataError(where, "no weights (*.safetensors or pytorch_model*.bin)")
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer_config.json").is_file():
        raise DataError(where, "no tokenizer (tokenizer.json or tokenizer_config.json)")
    return config


def citations(text: str, n: int) -> list[int]:
    """The distinct passage numbers cited in ``text`` as ``[k]`` (or ``[k, m]``) with
    ``1 <= k <= n``, in the order first cited."""
    seen: list[int] = []
    for match in _CITATION.finditer(text):
        for part in match.group(1).split(","):
            k = int(part)
            if 1 <= k <= n and k not in seen:
                seen.append(k)
    return seen


def passage_label(k: int, passage: Evidence) -> str:
    """``[k] (source, page p)``: how a passage is introduced to the model."""
    where = [passage.source] if passage.source else []
    if passage.page is not None:
        last = passage.page if passage.last_page is None else passage.last_page
        where.append(
            f"page {passage.page}" if last == passage.page else f"pages {passage.page}-{last}"
        )
    return f"[{k}] ({', '.join(where)})" if where else f"[{k}]"


def user_message(question: str, passages: Sequence[Evidence]) -> str:
    """The passages numbered ``[1]..[k]`` (best first), then the question."""
    blocks = [
        f"{passage_label(k, p)}\n{' '.join(p.text.split())}" for k, p in enumerate(passages, 1)
    ]
    return "Passages:\n\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question.strip()}"


class Generator:
    """A local causal LM that answers a question from evidence passages, with citations.

    ``folder`` is a Hugging Face model folder (checked by :func:`check_folder`); it is loaded
    with ``local_files_only`` so nothing is downloaded. Decoding is greedy, at most
    ``max_new_tokens`` tokens, on ``device``. The prompt is capped to the model's context
    (``max_position_embeddings``) less ``max_new_tokens`` (see :meth:`fit`).
    """

    def __init__(self, folder: str | Path, max_new_tokens: int = 200, device: str = "cpu") -> None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        check_folder(folder)
        self.folder = Path(folder)
        self.max_new_tokens = max_new_tokens
        self.device = device
        self.tokenizer, self.model = _load(self.folder, device)
        self.context: int | None = _context_length(self.model.config, self.tokenizer)
        if self.context is not None and max_new_tokens >= self.context:
            raise ValueError(
                f"max_new_tokens ({max_new_tokens}) leaves no room for the prompt: "
                f"{self.folder} reads at most {self.context} tokens"
            )

    # -- the prompt ---------------------------------------------------------------------------
    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def messages(self, question: str, passages: Sequence[Evidence]) -> list[dict[str, str]]:
        """The chat: the system instruction, then the numbered passages and the question."""
        return [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": user_message(question, passages)},
        ]

    def prompt(self, question: str, passages: Sequence[Evidence]) -> str:
        """The prompt text for exactly these passages: the tokenizer's chat template with a
        generation prompt when it has one, else plain text ending in ``Answer:``."""
        messages = self.messages(question, passages)
        if not self.has_chat_template:
            return f"{messages[0]['content']}\n\n{messages[1]['content']}\n\nAnswer:"
        from jinja2.exceptions import TemplateError

        try:
            return self._render(messages)
        except TemplateError:
            # Some templates (Gemma's, for one) refuse a system turn: fold it into the user's.
            merged = f"{messages[0]['content']}\n\n{messages[1]['content']}"
            return self._render([{"role": "user", "content": merged}])

    def _render(self, messages: list[dict[str, str]]) -> str:
        text = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        return str(text)

    def encode(self, question: str, passages: Sequence[Evidence]) -> list[int]:
        """Token ids of :meth:`prompt` (a chat template already holds its special tokens)."""
        text = self.prompt(question, passages)
        ids = self.tokenizer(text, add_special_tokens=not self.has_chat_template)["input_ids"]
        return list(ids)

    @property
    def budget(self) -> int | None:
        """Prompt tokens allowed: the context less ``max_new_tokens`` (``None``: no limit)."""
        return None if self.context is None else self.context - self.max_new_tokens

    def fit(self, question: str, passages: Sequence[Evidence]) -> list[Evidence]:
        """The passages whose prompt fits :attr:`budget`: the lowest-ranked ones dropped
        first (``passages`` is best first), then the last one's text cut."""
        budget = self.budget
        kept = list(passages)
        if budget is None:
            return kept
        while len(kept) > 1 and len(self.encode(question, kept)) > budget:
            kept.pop()
        if not kept or len(self.encode(question, kept)) <= budget:
            return kept
        last = kept[-1]

        def cut(n: int) -> Evidence:
            return replace(last, text=last.text[:n], end=last.start + n)

        if len(self.encode(question, [*kept[:-1], cut(0)])) > budget:
            raise DataError(
                "question",
                f"the question and instructions alone exceed the {budget} prompt tokens "
                f"that {self.folder} leaves with max_new_tokens={self.max_new_tokens}",
            )
        lo, hi = 0, len(last.text)  # the longest cut that fits lies in [lo, hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if len(self.encode(question, [*kept[:-1], cut(mid)])) <= budget:
                lo = mid
            else:
                hi = mid
        return [*kept[:-1], cut(lo)]

    # -- generation ---------------------------------------------------------------------------
    def _inputs(self, question: str, passages: Sequence[Evidence]) -> dict[str, Any]:
        import torch

        ids = self.encode(question, self.fit(question, passages))
        input_ids = torch.tensor([ids], dtype=torch.long, device=self.device)  # (1, T)
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "max_new_tokens": self.max_new_tokens,
            "do_sample": False,
        }
        pad = self.tokenizer.pad_token_id
        eos = self.tokenizer.eos_token_id
        if pad is not None or eos is not None:
            kwargs["pad_token_id"] = pad if pad is not None else eos
        if self.model.generation_config.eos_token_id is None and eos is not None:
            kwargs["eos_token_id"] = eos
        return kwargs

    def generate(self, question: str, passages: Sequence[Evidence]) -> str:
        """The whole answer, stripped."""
        inputs = self._inputs(question, passages)
        out = self.model.generate(**inputs)  # (1, T + new)
        new = out[0, inputs["input_ids"].shape[1] :]
        return str(self.tokenizer.decode(new, skip_special_tokens=True)).strip()

    def stream(self, question: str, passages: Sequence[Evidence]) -> Iterator[str]:
        """The answer in pieces as it is generated (not stripped; their join, stripped,
        equals :meth:`generate`)."""
        from transformers import TextIteratorStreamer

        inputs = self._inputs(question, passages)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                self.model.generate(**inputs, streamer=streamer)
            except BaseException as exc:  # re-raised in the consuming thread below
                failure.append(exc)
                streamer.end()  # unblock the consumer

        thread = threading.Thread(target=run, name="longmm-generate", daemon=True)
        thread.start()
        try:
            yield from streamer
        finally:
            thread.join()
        if failure:
            raise failure[0]


class GeneratingReader:
    """A reader whose answer text is written by ``generator`` from the evidence that
    ``reader`` (a :class:`~longmm.reading.reader.RetrievalReader` or
    :class:`~longmm.reading.multimodal.MultimodalReader`) retrieves. The answer has no span;
    ``citations`` lists the passage numbers it cites and ``timings["generate_s"]`` the time
    generation took (also added to ``seconds``)."""

    def __init__(self, reader: Any, generator: Generator) -> None:
        self.reader = reader
        self.generator = generator

    @property
    def strategy(self) -> str:
        return str(self.reader.strategy)

    @property
    def chunker(self) -> Any:
        """The wrapped reader's chunker (its token counter sizes documents)."""
        return self.reader.chunker

    def index(self, documents: Any, progress: Any | None = None) -> Any:
        """The wrapped reader's index of ``documents``."""
        return self.reader.index(documents, progress)

    def answer(self, question: str, index: Any, progress: Any | None = None) -> Answer:
        """The evidence answer with its text generated."""
        answer, pieces = self.answer_stream(question, index, progress)
        for _ in pieces:
            pass
        return answer

    def answer_stream(
        self, question: str, index: Any, progress: Any | None = None
    ) -> tuple[Answer, Iterator[str]]:
        """The evidence answer, retrieved now with an empty text, and the generated text in
        pieces; when the pieces run out the answer holds the text, its citations and the
        generation time. Without evidence nothing is generated."""
        answer = self.reader.answer(question, index, progress)
        answer.answer = ""
        answer.span = None
        return answer, self._generate_into(answer)

    def _generate_into(self, answer: Answer) -> Iterator[str]:
        t0 = time.perf_counter()
        pieces: list[str] = []
        if answer.evidence:
            for piece in self.generator.stream(answer.question, answer.evidence):
                pieces.append(piece)
                yield piece
        seconds = time.perf_counter() - t0
        answer.answer = "".join(pieces).strip()
        answer.citations = citations(answer.answer, len(answer.evidence))
        answer.timings["generate_s"] = seconds
        answer.seconds += seconds


def _load(folder: Path, device: str) -> tuple[Any, Any]:
    """The tokenizer and the model in eval mode; loading failures become DataErrors."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise DataError(str(folder), f"the tokenizer cannot be loaded: {exc}") from exc
    # A local small model loads in seconds; its progress bar would only clutter stderr.
    bar = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise DataError(str(folder), f"the model cannot be loaded: {exc}") from exc
    finally:
        if bar:
            logging.enable_progress_bar()
    return tokenizer, model.to(device).eval()


def _context_length(config: Any, tokenizer: Any) -> int | None:
    """The model's context in tokens: ``max_position_embeddings``, else the tokenizer's
    ``model_max_length`` when it is a real limit (transformers' default is ~1e30)."""
    n = getattr(config, "max_position_embeddings", None)
    if isinstance(n, int) and n > 0:
        return n
    n = getattr(tokenizer, "model_max_length", None)
    return n if isinstance(n, int) and 0 < n < 10**9 else None

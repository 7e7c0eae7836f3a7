"""One answer: a checked request's prompt run through an engine, and its OpenAI JSON shapes.

`run_answer` drives the shared generation loop on a seat of the engine, passes each piece of
text on as it is decoded (cut at a stop sequence), and always frees the seat, in the
background if the request was cancelled because its client hung up. The `*_body` and
`*_chunk` functions shape what OpenAI's clients read, plus the `cadencia` extension: the
route, whether every stage was verified, who was slashed, how many receipts were signed.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hive_core.api.engine import Engine
from hive_core.api.errors import Unavailable
from hive_core.api.schema import Sampling
from hive_core.api.text import StopText
from hive_core.exec.errors import ExecError
from hive_core.exec.generate import generate_hive
from hive_core.model.sampling import Sampler

logger = logging.getLogger(__name__)
_closing: set[asyncio.Task[dict[str, Any]]] = set()  # seats being freed after a cancel


@dataclass(frozen=True)
class Job:
    """A request ready to run: its prompt ids and sampling, `max_tokens` resolved."""

    kind: str  # "chat" or "text"
    model: str
    prompt_ids: list[int]
    max_tokens: int
    sampling: Sampling
    id: str = field(default_factory=lambda: secrets.token_hex(12))
    created: int = field(default_factory=lambda: int(time.time()))


@dataclass
class Outcome:
    """What an answer came to."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of turn or a stop sequence) or "length"
    ttft_s: float
    tokens_per_s: float
    extension: dict[str, Any]


class _StopSequence(Exception):
    """A stop sequence appeared: the answer ends here."""


async def run_answer(engine: Engine, tokenizer: Any, job: Job,
                     on_text: Callable[[str], None]) -> Outcome:
    """Generate `job` on `engine`, calling `on_text` with each new piece of text."""
    s = job.sampling
    text = StopText(tokenizer, s.stop)
    new: list[int] = []
    t0 = time.perf_counter()
    first: list[float] = []

    def on_token(token: int) -> None:
        if not first:
            first.append(time.perf_counter())
        new.append(token)
        piece = text.push(token)
        if piece:
            on_text(piece)
        if text.stopped:
            raise _StopSequence

    seat = await engine.seat()
    finish = "length"
    try:
        result = await generate_hive(
            seat.session, job.prompt_ids, max_new_tokens=job.max_tokens,
            context_length=engine.file.config.context_length,
            sampler=Sampler(s.temperature, s.top_p, s.seed), stop_ids=tokenizer.stop_ids,
            on_token=on_token)
        finish = "stop" if result.stopped else "length"
    except _StopSequence:
        finish = "stop"
    except ExecError as exc:
        seat.failed(str(exc))
        raise Unavailable(f"the hive could not finish the answer: {exc}",
                          code="hive_unavailable") from None
    finally:
        closing = asyncio.ensure_future(seat.close())
        _closing.add(closing)
        closing.add_done_callback(_closing.discard)
    extension = await asyncio.shield(closing)
    tail = text.finish()
    if tail:
        on_text(tail)
    t1 = time.perf_counter()
    ttft = (first[0] if first else t1) - t0
    decode_s = t1 - (first[0] if first else t1)
    rate = (len(new) - 1) / decode_s if len(new) > 1 and decode_s > 0 else 0.0
    return Outcome(text.text, len(job.prompt_ids), len(new), finish, ttft, rate, extension)


async def drain_closing(timeout_s: float = 30.0) -> None:
    """Wait for seats still being freed (at shutdown)."""
    if _closing:
        await asyncio.wait(list(_closing), timeout=timeout_s)


def _usage(o: Outcome) -> dict[str, int]:
    return {"prompt_tokens": o.prompt_tokens, "completion_tokens": o.completion_tokens,
            "total_tokens": o.prompt_tokens + o.completion_tokens}


def _extension(o: Outcome) -> dict[str, Any]:
    return {**o.extension, "ttft_s": round(o.ttft_s, 4), "tokens_per_s": round(o.tokens_per_s, 2)}


def answer_body(job: Job, o: Outcome) -> dict[str, Any]:
    """The whole answer (``stream: false``)."""
    head = {"id": _id(job), "created": job.created, "model": job.model}
    if job.kind == "chat":
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": o.text},
                                  "finish_reason": o.finish_reason, "logprobs": None}
        head["object"] = "chat.completion"
    else:
        choice = {"index": 0, "text": o.text, "finish_reason": o.finish_reason, "logprobs": None}
        head["object"] = "text_completion"
    return {**head, "choices": [choice], "usage": _usage(o), "cadencia": _extension(o)}


def _id(job: Job) -> str:
    return ("chatcmpl-" if job.kind == "chat" else "cmpl-") + job.id


def chunk(job: Job, piece: str | None, *, finish: str | None = None,
          first: bool = False) -> dict[str, Any]:
    """One streamed chunk: a piece of text, the first (role) chunk, or the last (`finish`)."""
    head = {"id": _id(job), "created": job.created, "model": job.model}
    if job.kind == "chat":
        delta: dict[str, Any] = {}
        if first:
            delta["role"] = "assistant"
        if piece is not None:
            delta["content"] = piece
        return {**head, "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                             "logprobs": None}]}
    return {**head, "object": "text_completion",
            "choices": [{"index": 0, "text": piece or "", "finish_reason": finish,
                         "logprobs": None}]}


def last_chunks(job: Job, o: Outcome) -> list[dict[str, Any]]:
    """The closing chunk (finish reason and the `cadencia` extension) and, when asked for,
    the usage chunk OpenAI sends with ``stream_options.include_usage``."""
    end = chunk(job, None, finish=o.finish_reason)
    end["cadencia"] = _extension(o)
    out = [end]
    if job.sampling.include_usage:
        usage = chunk(job, None)
        usage["choices"] = []
        usage["usage"] = _usage(o)
        out.append(usage)
    return out

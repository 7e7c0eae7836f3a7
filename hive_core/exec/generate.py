"""Generation over the hive: the async twin of `hive_core.model.generation`, plus
speculative decoding with a prompt-lookup draft verified in one pipeline pass.

Prompt lookup proposes the k tokens that followed the latest earlier occurrence of the
context's last n-gram; the hive runs the last token and the k drafts in one pass, and
the longest prefix that greedy decoding would also have chosen is kept (plus the next
greedy token). Output equals plain greedy decoding; it is only faster when drafts hit.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from hive_core.model.errors import ModelError, PromptError
from hive_core.model.generation import Generation, check_prompt
from hive_core.model.sampling import Sampler


class Session(Protocol):
    position: int

    def forward(self, ids: Sequence[int], *, all_logits: bool = False) -> Awaitable[torch.Tensor]: ...

    def rollback(self, position: int) -> None: ...


@dataclass
class SpecStats:
    """How speculation went: passes, drafted and accepted tokens."""

    passes: int = 0
    drafted: int = 0
    accepted: int = 0


def prompt_lookup(tokens: Sequence[int], k: int, max_ngram: int = 3) -> list[int]:
    """Up to `k` tokens that followed the latest earlier match of the last n-gram."""
    if k < 1:
        return []
    seq = list(tokens)
    for n in range(min(max_ngram, len(seq) - 1), 0, -1):
        tail = seq[-n:]
        for start in range(len(seq) - n - 1, -1, -1):
            if seq[start:start + n] == tail:
                return seq[start + n:start + n + k]
    return []


async def generate_hive(
    session: Session,
    prompt_ids: Sequence[int],
    *,
    max_new_tokens: int,
    context_length: int,
    sampler: Sampler | None = None,
    stop_ids: Collection[int] = (),
    on_token: Callable[[int], None] | None = None,
    speculate: int = 0,
    stats: SpecStats | None = None,
) -> Generation:
    """Generate up to `max_new_tokens`; `speculate` > 0 drafts that many tokens (greedy only)."""
    prompt = list(prompt_ids)
    check_prompt(prompt, context_length)
    if max_new_tokens < 1:
        raise PromptError(f"max new tokens must be at least 1, got {max_new_tokens}")
    sampler = sampler or Sampler()
    if speculate and not sampler.greedy:
        raise ModelError("speculative decoding needs greedy decoding (temperature 0)")
    stats = stats if stats is not None else SpecStats()
    limit = min(max_new_tokens, context_length - len(prompt))
    new: list[int] = []
    t0 = time.perf_counter()
    token = sampler(await session.forward(prompt))
    t1 = time.perf_counter()
    queue = [token]
    stopped = False
    while queue:
        for tok in queue:
            new.append(tok)
            if on_token is not None:
                on_token(tok)
            if tok in stop_ids:
                stopped = True
                break
            if len(new) >= limit:
                break
        if stopped or len(new) >= limit:
            break
        token = new[-1]
        room = limit - len(new) - 1
        draft = prompt_lookup(prompt + new, min(speculate, room)) if speculate and room > 0 else []
        if not draft:
            queue = [sampler(await session.forward([token]))]
            continue
        base = session.position
        logits = await session.forward([token, *draft], all_logits=True)
        guesses = [int(t) for t in torch.argmax(logits, dim=-1)]
        ok = 0
        while ok < len(draft) and guesses[ok] == draft[ok]:
            ok += 1
        stats.passes += 1
        stats.drafted += len(draft)
        stats.accepted += ok
        session.rollback(base + 1 + ok)
        queue = [*draft[:ok], guesses[ok]]
    t2 = time.perf_counter()
    return Generation(prompt_ids=prompt, new_ids=new, stopped=stopped, ttft_s=t1 - t0,
                      decode_s=t2 - t1,
                      prefill_tokens_per_s=len(prompt) / (t1 - t0) if t1 > t0 else 0.0)


class LocalSessionAdapter:
    """A `PipelineSession` behind the async `Session` protocol (local runs, comparisons)."""

    def __init__(self, inner: object) -> None:
        self.inner = inner

    @property
    def position(self) -> int:
        return int(self.inner.position)  # type: ignore[attr-defined]

    async def forward(self, ids: Sequence[int], *, all_logits: bool = False) -> torch.Tensor:
        return self.inner.forward(ids, all_logits=all_logits)  # type: ignore[attr-defined]

    def rollback(self, position: int) -> None:
        for caches in self.inner.caches:  # type: ignore[attr-defined]
            for cache in caches.values():
                cache.truncate(position)
        self.inner.position = position  # type: ignore[attr-defined]

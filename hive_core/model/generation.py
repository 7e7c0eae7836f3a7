"""The client-side generation loop: prefill, then sample one token at a time until a stop.

It only needs a `step(ids) -> logits` callable (a local pipeline session, or later a remote
one), so the same loop drives local and distributed inference.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import torch

from hive_core.model.errors import PromptError
from hive_core.model.sampling import Sampler

Step = Callable[[Sequence[int]], torch.Tensor]  # ids at the next positions -> last logits


@dataclass(frozen=True, slots=True)
class Generation:
    """What a generation produced and how fast."""

    prompt_ids: list[int]
    new_ids: list[int]  # excludes the prompt; includes the stop token if one was produced
    stopped: bool  # True when a stop token ended it, False when the limit did
    ttft_s: float  # from the start of prefill to the first new token chosen
    decode_s: float  # time for the tokens after the first
    prefill_tokens_per_s: float

    @property
    def tokens_per_s(self) -> float:
        """Decode speed: tokens after the first per second (0 when fewer than two)."""
        n = len(self.new_ids) - 1
        return n / self.decode_s if n > 0 and self.decode_s > 0 else 0.0


def check_prompt(prompt_ids: Sequence[int], context_length: int) -> None:
    if not prompt_ids:
        raise PromptError("the prompt is empty")
    if len(prompt_ids) >= context_length:
        raise PromptError(
            f"the prompt is {len(prompt_ids)} tokens; the model's context is {context_length} "
            f"(leave room for at least one new token)"
        )


def generate(
    step: Step,
    prompt_ids: Sequence[int],
    *,
    max_new_tokens: int,
    context_length: int,
    sampler: Sampler | None = None,
    stop_ids: Collection[int] = (),
    on_token: Callable[[int], None] | None = None,
) -> Generation:
    """Generate up to `max_new_tokens` (fewer if the context fills or a stop id comes)."""
    prompt = list(prompt_ids)
    check_prompt(prompt, context_length)
    if max_new_tokens < 1:
        raise PromptError(f"max new tokens must be at least 1, got {max_new_tokens}")
    sampler = sampler or Sampler()
    limit = min(max_new_tokens, context_length - len(prompt))
    new: list[int] = []
    t0 = time.perf_counter()
    token = sampler(step(prompt))
    t1 = time.perf_counter()
    stopped = False
    while True:
        new.append(token)
        if on_token is not None:
            on_token(token)
        if token in stop_ids:
            stopped = True
            break
        if len(new) >= limit:
            break
        token = sampler(step([token]))
    t2 = time.perf_counter()
    return Generation(
        prompt_ids=prompt,
        new_ids=new,
        stopped=stopped,
        ttft_s=t1 - t0,
        decode_s=t2 - t1,
        prefill_tokens_per_s=len(prompt) / (t1 - t0) if t1 > t0 else 0.0,
    )

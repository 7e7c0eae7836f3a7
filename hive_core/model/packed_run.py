"""Running discipline for local execution: torch thread count and chunked prefill.

Bit-identical logits across stages need the same thread count everywhere, so a node sets it
once, before any op runs. Prefill goes through the model in chunks so activations and the
attention mask stay bounded whatever the prompt length.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from hive_core.model.errors import ModelError

PREFILL_CHUNK = 128  # tokens per prefill step (a multiple of the kernels' row blocks)
Step = Callable[[Sequence[int]], torch.Tensor]


def default_threads() -> int:
    """Physical cores (hyper-threads share the memory bandwidth decode is bound by)."""
    import psutil

    return psutil.cpu_count(logical=False) or 1


def set_threads(n: int | None = None) -> int:
    """Use `n` intra-op threads (default: physical cores) and one inter-op thread."""
    n = default_threads() if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ModelError(f"thread count must be a positive integer, got {n!r}")
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)  # ops of one token run in order: no pool needed
    except RuntimeError:
        pass  # only settable before the first parallel op; an embedding app may have run one
    return n


def chunked(step: Step, size: int = PREFILL_CHUNK) -> Step:
    """`step` fed at most `size` ids at a time; returns the logits of the last call."""
    if size < 1:
        raise ModelError(f"prefill chunk must be at least 1 token, got {size}")

    def run(ids: Sequence[int]) -> torch.Tensor:
        ids = list(ids)
        if not ids:
            raise ModelError("no token ids to feed")
        logits = step(ids[:size])
        for start in range(size, len(ids), size):
            logits = step(ids[start : start + size])
        return logits

    return run

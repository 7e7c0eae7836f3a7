"""Running discipline for local execution: torch thread count, heap growth, chunked prefill.

Bit-identical logits across stages need the same thread count everywhere, so a node sets it
once, before any op runs (`prepare_compute`). Prefill goes through the model in chunks so
activations and the attention mask stay bounded whatever the prompt length.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from hive_core.model.errors import ModelError
from hive_core.model.packed.memory import LIBC

_M_MMAP_THRESHOLD = -3  # mallopt parameter (glibc malloc.h)

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


def limit_heap(threshold: int = 128 * 1024) -> bool:
    """Serve every allocation above `threshold` bytes from its own mapping, unmapped when freed.

    glibc raises its mmap threshold after each large free, so a prefill chunk's activations
    move into the heap and stay resident after the chunk; a fixed threshold keeps resident
    memory at what the model holds. Returns False where there is no glibc to tell.
    """
    if LIBC is None or not hasattr(LIBC, "mallopt"):
        return False
    return bool(LIBC.mallopt(_M_MMAP_THRESHOLD, threshold))


def prepare_compute(threads: int | None = None) -> int:
    """What a process does once before it computes: `threads` torch threads (default: physical
    cores) and `limit_heap`. Returns the thread count."""
    n = set_threads(threads)
    limit_heap()
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

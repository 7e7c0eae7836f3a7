"""Which layers each process of a local hive serves: contiguous spans, replicated round-robin."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable


class SpanLayoutError(ValueError):
    """The hive cannot be split as asked (no nodes, more stages than layers or nodes)."""


def default_stages(servers: int) -> int:
    """One stage per server up to 3; from 4 servers on, every stage gets (at least) 2 replicas."""
    if servers < 1:
        raise SpanLayoutError("no node to serve the model on (--nodes 0 and no sentinel)")
    return servers if servers < 4 else servers // 2


def even_spans(n_layers: int, stages: int) -> list[tuple[int, int]]:
    """`stages` contiguous [start, end) ranges covering 0..n_layers, sizes differing by at most 1."""
    if not 1 <= stages <= n_layers:
        raise SpanLayoutError(f"cannot split {n_layers} layers into {stages} stages")
    base, extra = divmod(n_layers, stages)
    spans, start = [], 0
    for i in range(stages):
        end = start + base + (1 if i < extra else 0)
        spans.append((start, end))
        start = end
    return spans


def assign_spans(model: str, n_layers: int, servers: int,
                 stages: int | None = None) -> list[str]:
    """One ``--serve MODEL:START-END/N`` text per server: server i serves stage i mod stages."""
    stages = default_stages(servers) if stages is None else stages
    if not 1 <= stages <= servers:
        raise SpanLayoutError(f"--stages must be between 1 and the {servers} serving nodes")
    spans = even_spans(n_layers, stages)
    return [f"{model}:{a}-{b}/{n_layers}" for a, b in (spans[i % stages] for i in range(servers))]


PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], None]:
    """A `preexec_fn` for children: they get SIGTERM when this process dies, even by SIGKILL.

    libc is resolved here, in the parent, so the child (between fork and exec) only calls
    prctl. Linux only; elsewhere, and as a second guard, children watch --parent-pid.
    """
    parent = os.getpid()
    prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
    sigterm = int(signal.SIGTERM)

    def in_child() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, sigterm, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return in_child

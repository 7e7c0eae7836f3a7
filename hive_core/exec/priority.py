"""Compute threads that yield to the frame loop: model work at a lower OS scheduling priority.

When the game hosts shards, rendering and model compute share the device's cores; a lower
nice value on the compute threads lets the frame loop run first (measured on 2 cores: hosting
an ask raised frame p95 by 80 % at equal priority, by 14-47 % at nice 10-19, run to run).
The game also moves its shards' stage compute into child processes at the same nice value
(`hive_core.exec.stage_worker`), so that compute never holds the frame loop's interpreter
lock; these threads then only seal, sign and forward. Nodes without a renderer keep the
default of 0 and compute on the thread itself.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from hive_core.exec.frame_gate import FrameGate

T = TypeVar("T")

logger = logging.getLogger(__name__)


def _lower_priority(nice: int) -> None:
    # On Linux nice is per thread: PRIO_PROCESS with who=0 is the calling thread.
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except (AttributeError, OSError) as exc:  # not supported here, or not permitted
        logger.debug("could not lower compute thread priority: %s", exc)


class GatedPool(ThreadPoolExecutor):
    """A pool whose every job first waits on a `FrameGate` (so it starts between frames)."""

    def __init__(self, gate: FrameGate, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = gate

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        return super().submit(self._gated, fn, *args, **kwargs)

    def _gated(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        self.gate.wait()
        return fn(*args, **kwargs)


def compute_pool(name: str, nice: int = 0, gate: FrameGate | None = None) -> ThreadPoolExecutor:
    """One worker thread for model compute, at `nice` (0: the process's own priority); with
    `gate`, each job waits for the frame in progress to end before it starts."""
    if nice < 0 or nice > 19:
        raise ValueError(f"compute nice must be 0..19, got {nice}")
    kwargs: dict[str, Any] = {"max_workers": 1, "thread_name_prefix": name}
    if nice:
        kwargs.update(initializer=_lower_priority, initargs=(nice,))
    return GatedPool(gate, **kwargs) if gate is not None else ThreadPoolExecutor(**kwargs)

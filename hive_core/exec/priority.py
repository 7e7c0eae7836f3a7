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
from concurrent.futures import ThreadPoolExecutor

logger = logging.getLogger(__name__)


def _lower_priority(nice: int) -> None:
    # On Linux nice is per thread: PRIO_PROCESS with who=0 is the calling thread.
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except (AttributeError, OSError) as exc:  # not supported here, or not permitted
        logger.debug("could not lower compute thread priority: %s", exc)


def compute_pool(name: str, nice: int = 0) -> ThreadPoolExecutor:
    """One worker thread for model compute, at `nice` (0: the process's own priority)."""
    if nice < 0 or nice > 19:
        raise ValueError(f"compute nice must be 0..19, got {nice}")
    if nice == 0:
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=name,
                              initializer=_lower_priority, initargs=(nice,))

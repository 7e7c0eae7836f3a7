"""Opt-in timing of a hop's parts (framing, sealing, signing, hashing): off unless asked for.

`CADENCIA_HOP_TIMING=DIR` in a process's environment, read once at import, turns it on:
functions decorated with `timed(part)` then add their `time.perf_counter` spans to per-part
totals, and the process writes them to ``DIR/<pid>.json`` (``{part: [calls, seconds]}``) at
exit and whenever it gets SIGUSR1, so a bench can read a long-running node's totals before
and after the tokens it times. Off (the default), `timed` hands back the function itself,
so the hop path pays nothing, not even a branch.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

ENV = "CADENCIA_HOP_TIMING"
PARTS = ("framing", "sealing", "signing", "hashing")

P = ParamSpec("P")
R = TypeVar("R")

_dir = os.environ.get(ENV) or None
_lock = threading.RLock()  # reentrant: the SIGUSR1 dump may interrupt `add` on its thread
_totals: dict[str, list[float]] = {}


def enabled() -> bool:
    """Whether this process times its hops (`CADENCIA_HOP_TIMING` was set at import)."""
    return _dir is not None


def add(part: str, seconds: float) -> None:
    """Count one call of `part` that took `seconds` (threads may call this at once)."""
    with _lock:
        entry = _totals.setdefault(part, [0.0, 0.0])
        entry[0] += 1
        entry[1] += seconds


def timed(part: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: time each call as `part` when enabled; otherwise `fn` unchanged."""
    if part not in PARTS:
        raise ValueError(f"unknown hop part {part!r} (expected one of {', '.join(PARTS)})")

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        if _dir is None:
            return fn

        @functools.wraps(fn)
        def timed_fn(*args: P.args, **kwargs: P.kwargs) -> R:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                add(part, time.perf_counter() - t0)

        return timed_fn

    return wrap


def snapshot() -> dict[str, tuple[int, float]]:
    """Calls and seconds per part so far in this process."""
    with _lock:
        return {part: (int(n), s) for part, (n, s) in _totals.items()}


def _dump() -> None:
    if _dir is None:
        return
    try:
        os.makedirs(_dir, exist_ok=True)
        with open(os.path.join(_dir, f"{os.getpid()}.json"), "w", encoding="utf-8") as f:
            json.dump(snapshot(), f)
    except OSError:
        pass  # a bench's scratch directory gone at exit: nothing to report, nothing to break


if _dir is not None:
    atexit.register(_dump)
    try:  # a snapshot on demand; only the main thread may set a handler (else: at exit only)
        signal.signal(signal.SIGUSR1, lambda _sig, _frame: _dump())
    except ValueError:
        pass

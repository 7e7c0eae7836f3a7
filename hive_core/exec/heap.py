"""Handing the heap's free pages back to the OS after sessions end (glibc's `malloc_trim`).

A session's KV caches are many buffers of tens of KB (SmolLM2: 3 heads x 64 positions x 64
dims of float32 = 48 KB per layer, keys and values), below glibc's mmap threshold: freed, they
stay in the allocating thread's arena, and the process's RSS stays at its high-water mark
however few sessions are left. Measured on the loopback soak's serving nodes after 206
answers: `malloc_trim(0)` took RSS from 383 to 364 MB with no session open (and the askers'
process from 496 to 437 MB). A trim walks every arena (about 10 ms on such a heap), so it runs
at most once every `TRIM_EVERY_S`, on the thread that freed the memory. Elsewhere than glibc
it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from collections.abc import Callable

TRIM_EVERY_S = 5.0  # the least time between two trims of one process


def _libc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to call
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


class HeapTrimmer:
    """Trims the heap when asked, at most once every `every_s` seconds (thread-safe)."""

    def __init__(self, every_s: float = TRIM_EVERY_S,
                 trim: Callable[[int], int] | None = None) -> None:
        if every_s < 0:
            raise ValueError(f"the trim period must be >= 0 s, got {every_s}")
        self.every_s = every_s
        self._trim = trim if trim is not None else _libc_trim()
        self._last = -float("inf")
        self._lock = threading.Lock()
        self.trims = 0  # trims run (status, tests)

    def __call__(self, now: float | None = None) -> bool:
        """Trim now unless one ran within the period; whether it did."""
        if self._trim is None:
            return False
        now = time.monotonic() if now is None else now
        with self._lock:
            if now - self._last < self.every_s:
                return False
            self._last = now
        self._trim(0)
        self.trims += 1
        return True


trim_heap = HeapTrimmer()  # this process's

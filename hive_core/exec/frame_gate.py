"""A frame gate: hosted compute waits while the game renders a frame.

On a phone or a 2-core PC the game's frames and the shards it hosts share the cores, the
caches and the memory bus. A lower OS priority (`hive_core.exec.priority`) gives the frame
loop the cores first, but a compute thread that is already running a matmul keeps the
caches and the memory bus busy while llvmpipe rasterises (measured on 2 cores: hosting an
ask still raised frame p95 by 16 % with compute in child processes at nice 19; with the
gate, by 5 %: `bench/bench_view.py`). The gate makes the sharing explicit:
the frame loop `hold`s it for the length of one frame, and compute calls `wait` at its safe
points (before each layer, before sealing and signing), so between them compute runs only
in the gaps between frames. The frame rate cap (30 or 60 fps) leaves most of each period to
compute.

The flag lives in one shared memory page (a memfd where Linux has it, else an unlinked
temporary file) so that child processes (`hive_core.exec.stage_worker`) see it through an
inherited file descriptor. A waiter never waits longer than `max_wait_s` in one call:
compute always progresses, even under an uncapped frame loop or a frame loop that died
holding the gate.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import tempfile
import time
from collections.abc import Iterator

PAGE = 8  # bytes mapped: byte 0 is the flag
POLL_S = 0.0005  # how often a waiter looks at the flag
MAX_WAIT_S = 0.1  # the longest one `wait` call blocks


class FrameGate:
    """A flag shared with child processes: set while a frame renders."""

    def __init__(self, fd: int | None = None, max_wait_s: float = MAX_WAIT_S) -> None:
        """A new gate, or (with `fd`) the gate a parent process passed down as that fd."""
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self.max_wait_s = max_wait_s
        self.owner = fd is None
        if fd is None:
            fd = _shared_fd()
            os.ftruncate(fd, PAGE)
        self.fd = fd
        self._map = mmap.mmap(fd, PAGE)

    @property
    def closed(self) -> bool:
        return self._map.closed

    @property
    def held(self) -> bool:
        return not self._map.closed and self._map[0] != 0

    def hold(self) -> None:
        """Set the flag (a frame starts); nothing once closed."""
        if not self._map.closed:
            self._map[0] = 1

    def release(self) -> None:
        """Clear the flag (the frame ended); nothing once closed."""
        if not self._map.closed:
            self._map[0] = 0

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """Hold the gate for the body (one frame)."""
        self.hold()
        try:
            yield
        finally:
            self.release()

    def wait(self) -> float:
        """Block while the gate is held, at most `max_wait_s`; the seconds waited."""
        if not self.held:
            return 0.0
        t0 = time.perf_counter()
        deadline = t0 + self.max_wait_s
        while self.held and time.perf_counter() < deadline:
            time.sleep(POLL_S)
        return time.perf_counter() - t0

    def close(self) -> None:
        """Unmap (and, in the process that made it, close the fd): the gate is open for good,
        and a child process that mapped it keeps its own mapping."""
        if not self._map.closed:
            self._map.close()
        if self.owner:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.owner = False


def _shared_fd() -> int:
    if hasattr(os, "memfd_create"):
        return os.memfd_create("cadencia-frame-gate")  # a child gets it through pass_fds
    with tempfile.TemporaryFile() as f:  # unlinked at once; the dup keeps it
        return os.dup(f.fileno())

"""A virtual-time asyncio loop: timers fire in order without sleeping, so 1,000 nodes fit.

Everything in the simulated hive (memory channels' `call_at` deliveries, DHT RPC
timeouts, `asyncio.sleep` in maintenance) reads time from `loop.time()`. This loop's
clock only moves when nothing is ready to run: it jumps to the next timer instead of
waiting for it. Simulated latencies therefore cost no wall time and results do not
depend on how busy the CPU is; what is measured is simulated (network) time.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class SimulationDeadlock(RuntimeError):
    """Nothing is ready, no timer is pending, and the awaited work is not done."""


class _VirtualSelector(selectors.BaseSelector):
    """Wraps a real selector (for the loop's self-pipe) but never blocks: it advances
    the loop's virtual clock by the timeout instead."""

    def __init__(self) -> None:
        self._real = selectors.DefaultSelector()
        self.loop: VirtualClockLoop | None = None

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or self.loop is None:
            return ready
        if timeout is None:
            # asyncio waits forever only when no timer is scheduled: in a closed
            # simulation nothing can ever wake it again.
            self.loop.stalled = True
            self.loop.call_soon(self.loop.on_stall)
            return []
        if timeout > 0:
            self.loop.advance(timeout)
        return []

    def close(self) -> None:
        self._real.close()

    def get_map(self) -> Any:
        return self._real.get_map()


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose `time()` is simulated seconds starting at 0."""

    def __init__(self) -> None:
        selector = _VirtualSelector()
        super().__init__(selector)
        selector.loop = self
        self._virtual_now = 0.0
        self.stalled = False
        self.on_stall: Any = lambda: None  # called once the loop has nothing left to do

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        self._virtual_now += seconds


def run_virtual(main: Coroutine[Any, Any, T], *, debug: bool = False) -> T:
    """Run `main` to completion on a fresh VirtualClockLoop (like `asyncio.run`).

    Raises SimulationDeadlock if the loop runs out of work before `main` finishes.
    """
    loop = VirtualClockLoop()
    loop.set_debug(debug)
    try:
        task = loop.create_task(main)

        def on_stall() -> None:
            if not task.done():
                task.cancel(msg="simulation deadlock")

        loop.on_stall = on_stall
        try:
            return loop.run_until_complete(task)
        except asyncio.CancelledError as exc:
            if loop.stalled:
                raise SimulationDeadlock("simulation stalled: no timer pending and "
                                         "the main coroutine is still waiting") from exc
            raise
    finally:
        try:
            _cancel_all(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in pending:
        t.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))

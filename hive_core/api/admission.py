"""A bounded line for answers: `slots` generate at once, `queue` more may wait, nobody hangs.

A request that finds every slot taken and the line full is refused at once (429, with the
reason and a Retry-After); one that waits longer than `wait_s` for a slot gives up (503).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from hive_core.api.errors import Busy, Unavailable


@dataclass
class AdmissionStats:
    """What the line did."""

    admitted: int = 0
    refused: int = 0  # the line was full (429)
    timed_out: int = 0  # waited too long (503)


class Admission:
    """At most `slots` answers at once, `queue` waiting, each waiting at most `wait_s`."""

    def __init__(self, slots: int, queue: int, wait_s: float) -> None:
        if slots < 1 or queue < 0 or not wait_s > 0:
            raise ValueError(f"bad admission limits: {slots} slots, {queue} queue, {wait_s} s")
        self.slots, self.queue, self.wait_s = slots, queue, wait_s
        self._free = asyncio.Semaphore(slots)
        self.active = 0
        self.waiting = 0
        self.stats = AdmissionStats()

    @asynccontextmanager
    async def seat(self) -> AsyncIterator[None]:
        """Hold a slot for the body of the `async with`."""
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    async def acquire(self) -> None:
        if not self._free.locked():  # a free slot and nobody waiting: taken at once
            await self._free.acquire()
        elif self.waiting >= self.queue:
            self.stats.refused += 1
            raise Busy(f"the server is busy: {self.active} answers in progress and "
                       f"{self.waiting} waiting (the line holds {self.queue}); retry shortly",
                       code="queue_full")
        else:
            self.waiting += 1
            try:
                await asyncio.wait_for(self._free.acquire(), self.wait_s)
            except TimeoutError:
                self.stats.timed_out += 1
                raise Unavailable(f"no free slot within {self.wait_s:g} s ({self.active} "
                                  "answers in progress); retry shortly",
                                  code="queue_timeout") from None
            finally:
                self.waiting -= 1
        self.active += 1
        self.stats.admitted += 1

    def release(self) -> None:
        self.active -= 1
        self._free.release()

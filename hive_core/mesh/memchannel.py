"""In-memory channels with simulated latency, jitter, loss, duplication and reordering."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass

from hive_core.mesh.channel import ChannelClosed


@dataclass(frozen=True)
class LinkProfile:
    """How a simulated one-way link treats each message."""

    latency_s: float = 0.0  # base one-way delay
    jitter_s: float = 0.0  # extra delay drawn uniformly from [0, jitter_s]
    loss: float = 0.0  # probability a transmission is lost
    duplicate: float = 0.0  # probability a delivered message arrives twice
    reorder: float = 0.0  # probability a message is held back by an extra 0..3x latency
    reliable: bool = False  # lost transmissions are retried after rto_s instead of dropped
    ordered: bool = False  # deliver in send order (head-of-line blocking, like SCTP ordered)
    rto_s: float = 1.0  # retransmission timeout used when reliable (aiortc's minimum is 1 s)
    bandwidth_bps: float = 0.0  # 0 = unlimited; else serialisation delay len*8/bandwidth


class MemoryChannel:
    """One end of an in-memory channel pair; satisfies ``hive_core.mesh.channel.Channel``."""

    def __init__(self, label: str, profile: LinkProfile, rng: random.Random) -> None:
        self._label = label
        self._profile = profile
        self._rng = rng
        self._inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._peer: MemoryChannel | None = None
        self._closed = False
        self._last_delivery = 0.0
        self._link_free_at = 0.0
        self.sent_messages = 0
        self.sent_bytes = 0

    @property
    def label(self) -> str:
        return self._label

    @property
    def closed(self) -> bool:
        return self._closed

    def _delay(self, size: int, now: float) -> float | None:
        """Delivery time of one message, or None if it is lost for good."""
        p = self._profile
        start = now
        if p.bandwidth_bps > 0:
            start = max(now, self._link_free_at)
            self._link_free_at = start + size * 8 / p.bandwidth_bps
            start = self._link_free_at
        extra = 0.0
        while self._rng.random() < p.loss:
            if not p.reliable:
                return None
            extra += p.rto_s  # retransmitted after a timeout
        when = start + extra + p.latency_s + self._rng.uniform(0.0, p.jitter_s)
        if p.reorder and self._rng.random() < p.reorder:
            when += self._rng.uniform(0.0, 3.0 * max(p.latency_s, 0.001))
        if p.ordered:
            # strictly increasing: the event loop's timer heap does not keep ties in order
            when = max(when, self._last_delivery + 1e-6)
            self._last_delivery = when
        return when

    async def send(self, data: bytes) -> None:
        if self._closed or self._peer is None:
            raise ChannelClosed(f"channel {self._label!r} is closed")
        data = bytes(data)
        self.sent_messages += 1
        self.sent_bytes += len(data)
        loop = asyncio.get_running_loop()
        now = loop.time()
        when = self._delay(len(data), now)
        if when is None:
            return
        copies = 2 if self._rng.random() < self._profile.duplicate else 1
        peer = self._peer
        for i in range(copies):
            at = when if i == 0 else when + self._rng.uniform(0.0, max(self._profile.latency_s, 0.001))
            if at <= now and not self._profile.ordered:
                peer._deliver(data)
            else:
                loop.call_at(at, peer._deliver, data)

    def _deliver(self, data: bytes) -> None:
        if not self._closed:
            self._inbox.put_nowait(data)

    async def recv(self) -> bytes:
        if self._closed and self._inbox.empty():
            raise ChannelClosed(f"channel {self._label!r} is closed")
        item = await self._inbox.get()
        if item is None:
            self._closed = True
            raise ChannelClosed(f"channel {self._label!r} was closed by the peer")
        return item

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            try:
                yield await self.recv()
            except ChannelClosed:
                return

    async def close(self) -> None:
        self._shut()
        if self._peer is not None:
            self._peer._shut()

    def _shut(self) -> None:
        if not self._closed:
            self._closed = True
            self._inbox.put_nowait(None)


def memory_pair(
    label: str = "hive",
    profile: LinkProfile | None = None,
    back: LinkProfile | None = None,
    seed: int | None = None,
) -> tuple[MemoryChannel, MemoryChannel]:
    """Two connected ends; ``profile`` shapes a->b, ``back`` shapes b->a (default: the same)."""
    rng = random.Random(seed)
    fwd = profile or LinkProfile()
    a = MemoryChannel(label, fwd, random.Random(rng.random()))
    b = MemoryChannel(label, back or fwd, random.Random(rng.random()))
    a._peer, b._peer = b, a
    return a, b

"""A node's live event feed: the hive events it sees, pushed to the spectators that subscribed.

`EventFeed.publish(event)` never blocks and never fails: each subscriber has its own bounded
queue drained by its own sender task, so a slow or dead spectator loses events (counted)
instead of slowing serving. Subscribers are bounded too; a subscription lapses after its
TTL unless renewed, and ends when its link drops or a send fails.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field, replace

from hive_core.mesh.node import Node
from hive_core.protocol.feed import FeedAnswer, FeedEvent, FeedSubscribe

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeedConfig:
    """Limits of one node's feed."""

    max_subscribers: int = 8  # further subscriptions are refused
    queue_size: int = 256  # events waiting per subscriber; beyond this the newest are dropped
    max_ttl_s: float = 120.0  # longest subscription granted before it must be renewed
    send_timeout_s: float = 5.0  # a send stuck this long ends that subscription


@dataclass
class _Subscriber:
    queue: asyncio.Queue[tuple[float, FeedEvent]]
    expires: float
    task: asyncio.Task[None] | None = None
    sent: int = 0
    dropped: int = 0


@dataclass
class FeedStats:
    """What the feed did, for tests and status."""

    published: int = 0
    sent: int = 0
    dropped: int = 0  # events a full queue refused
    refused: int = 0  # subscriptions refused (too many)
    ended: list[str] = field(default_factory=list)  # why subscriptions ended


class EventFeed:
    """Answers FeedSubscribe on `node` and pushes published events to each subscriber."""

    def __init__(self, node: Node, config: FeedConfig | None = None) -> None:
        self.node = node
        self.config = config or FeedConfig()
        self.subscribers: dict[bytes, _Subscriber] = {}
        self.stats = FeedStats()
        self._seq = 0
        self.closed = False
        node.on(FeedSubscribe, self._on_subscribe)
        node.on_link_lost.append(self._on_link_lost)

    def _on_subscribe(self, peer: bytes, msg: FeedSubscribe) -> asyncio.Future[None] | None:
        if self.closed:
            return None
        if not msg.on or msg.ttl_s <= 0:
            self._end(peer, "unsubscribed")
            return asyncio.ensure_future(self._answer(peer, FeedAnswer(msg.rpc_id, True, "", 0.0)))
        ttl = min(msg.ttl_s, self.config.max_ttl_s)
        sub = self.subscribers.get(peer)
        if sub is None:
            self._expire(time.monotonic())
            if len(self.subscribers) >= self.config.max_subscribers:
                self.stats.refused += 1
                return asyncio.ensure_future(self._answer(peer, FeedAnswer(
                    msg.rpc_id, False, f"feed full ({self.config.max_subscribers} subscribers)", 0.0)))
            sub = self.subscribers[peer] = _Subscriber(asyncio.Queue(self.config.queue_size), 0.0)
            sub.task = self.node.spawn(self._drain(peer, sub), name="feed sender")
        sub.expires = time.monotonic() + ttl
        return asyncio.ensure_future(self._answer(peer, FeedAnswer(msg.rpc_id, True, "", ttl)))

    async def _answer(self, peer: bytes, answer: FeedAnswer) -> None:
        try:
            await self.node.send(peer, answer)
        except ConnectionError as exc:
            self._end(peer, f"answer failed: {exc}")

    def publish(self, event: FeedEvent) -> None:
        """Queue `event` for every live subscriber (call on the event loop's thread)."""
        if self.closed or not self.subscribers:
            return
        now = time.monotonic()
        self._expire(now)
        self._seq += 1
        event = replace(event, seq=self._seq)
        self.stats.published += 1
        for sub in self.subscribers.values():
            try:
                sub.queue.put_nowait((now, event))
            except asyncio.QueueFull:
                sub.dropped += 1
                self.stats.dropped += 1

    async def _drain(self, peer: bytes, sub: _Subscriber) -> None:
        while True:
            at, event = await sub.queue.get()
            age = min(max(time.monotonic() - at, 0.0), 3600.0)
            try:
                await asyncio.wait_for(self.node.send(peer, replace(event, age_s=age)),
                                       self.config.send_timeout_s)
            except (ConnectionError, TimeoutError) as exc:
                self._end(peer, f"send failed: {type(exc).__name__}", cancel=False)
                return
            sub.sent += 1
            self.stats.sent += 1

    def _expire(self, now: float) -> None:
        for peer in [p for p, s in self.subscribers.items() if s.expires < now]:
            self._end(peer, "expired")

    def _on_link_lost(self, link: object) -> None:
        peer = getattr(link, "node_id", b"")
        if peer in self.subscribers and self.node.peers.best(peer) is None:
            self._end(peer, "link lost")

    def _end(self, peer: bytes, reason: str, *, cancel: bool = True) -> None:
        sub = self.subscribers.pop(peer, None)
        if sub is None:
            return
        self.stats.ended.append(reason)
        logger.info("%s: feed to %s ended: %s", self.node, peer.hex()[:12], reason)
        if cancel and sub.task is not None:
            sub.task.cancel()

    async def close(self) -> None:
        self.closed = True
        for peer in list(self.subscribers):
            self._end(peer, "closed")


def hop_time_s(node: Node, peer: bytes, fallback_s: float = 0.002) -> float:
    """One-way time to `peer`: half the link's measured RTT, else `fallback_s`."""
    link = node.peers.best(peer)
    rtt = getattr(link, "rtt_ms", None)
    if rtt is None or not math.isfinite(rtt) or rtt <= 0:
        return fallback_s
    return min(rtt / 2000.0, 60.0)

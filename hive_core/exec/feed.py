"""A node's live event feed: the hive events it sees, pushed to the spectators that subscribed.

`EventFeed.publish(event)` takes a hive event the node reports on itself (mapped to the wire
by `hive_core.events.to_feed`); it never blocks and never fails: each subscriber has its own bounded
queue drained by its own sender task, so a slow or dead spectator loses events (counted)
instead of slowing serving. Subscribers are bounded too; a subscription lapses after its
TTL unless renewed, and ends when its link drops or a send fails.

Verdicts come from the asker, who alone compares the replicas: it sends each trial's
verdict (`FeedVerdict`) to the nodes that served it (`tell_verdict`), and the feed of a node
that served that asker's session republishes it (a slashing with its evidence, in chunks;
spectators re-check the evidence before they show anything).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from hive_core.base.stage import Part
from hive_core.events import EventError, HiveEvent, HopSent, to_feed
from hive_core.mesh.node import Node, PeerUnavailable
from hive_core.protocol import encode_struct
from hive_core.protocol.feed import (
    EventKind,
    FeedAnswer,
    FeedEvent,
    FeedSubscribe,
    FeedVerdict,
    evidence_chunks,
    feed_event,
)
from hive_core.protocol.trust import SlashEvidence

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeedConfig:
    """Limits of one node's feed."""

    max_subscribers: int = 8  # further subscriptions are refused
    queue_size: int = 256  # events waiting per subscriber; beyond this the newest are dropped
    max_ttl_s: float = 120.0  # longest subscription granted before it must be renewed
    send_timeout_s: float = 5.0  # a send stuck this long ends that subscription
    served_sessions: int = 1024  # (asker, session) pairs remembered: whose verdicts are relayed


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
    verdicts: int = 0  # verdicts relayed from askers
    verdicts_refused: int = 0  # verdicts from a node whose session we did not serve
    ended: list[str] = field(default_factory=list)  # why subscriptions ended


class EventFeed:
    """Answers FeedSubscribe on `node` and pushes published events to each subscriber."""

    class State(enum.Enum):
        OPEN = "open"
        CLOSED = "closed"  # final: subscriptions ended, nothing more is sent

    def __init__(self, node: Node, config: FeedConfig | None = None) -> None:
        self.node = node
        self.config = config or FeedConfig()
        self.subscribers: dict[bytes, _Subscriber] = {}
        self.stats = FeedStats()
        self._seq = 0
        self.state = EventFeed.State.OPEN
        self._served: OrderedDict[tuple[bytes, bytes], None] = OrderedDict()
        node.on(FeedSubscribe, self._on_subscribe)
        node.on(FeedVerdict, self._on_verdict)
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

    def publish(self, event: HiveEvent) -> None:
        """Queue `event` (about this node's own work) for every live subscriber (call on the
        event loop's thread); an event a node does not report on its feed is logged and dropped."""
        if isinstance(event, HopSent):  # we served `from_node`'s session: its verdicts are welcome
            self._remember(event.from_node, event.session_id)
        if self.closed or not self.subscribers:
            return
        try:
            frame = to_feed(event)
        except EventError as exc:
            logger.warning("%s: not published: %s", self.node, exc)
            return
        self._queue(frame)

    def _queue(self, event: FeedEvent) -> None:
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

    def _remember(self, asker: bytes, session_id: bytes) -> None:
        key = (asker, session_id)
        self._served[key] = None
        self._served.move_to_end(key)
        while len(self._served) > self.config.served_sessions:
            self._served.popitem(last=False)

    def _on_verdict(self, peer: bytes, msg: FeedVerdict) -> None:
        """Republish an asker's verdict on a trial we served for it."""
        me = self.node.node_id
        if (peer, msg.session_id) not in self._served or (msg.verified and me not in msg.agreeing):
            self.stats.verdicts_refused += 1
            logger.info("%s: refused a verdict from %s on a session it did not run here",
                        self.node, peer.hex()[:12])
            return
        self.stats.verdicts += 1
        if msg.verified:
            kind, node, quorum = EventKind.VERIFIED, me, len(msg.agreeing)
        else:
            kind, node, quorum = EventKind.SLASHED, msg.offender, 1
        self._queue(feed_event(kind, node, session_id=msg.session_id, step=msg.step,
                                layer_start=msg.layer_start, layer_end=msg.layer_end,
                                part=msg.part, quorum=quorum, reason=msg.reason, chunk=msg.chunk,
                                chunks=msg.chunks, evidence=msg.evidence))

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

    @property
    def closed(self) -> bool:
        return self.state is EventFeed.State.CLOSED

    async def close(self) -> None:
        if not self.closed:
            logger.info("%s: feed %s -> %s", self.node, self.state.value, EventFeed.State.CLOSED.value)
        self.state = EventFeed.State.CLOSED
        for peer in list(self.subscribers):
            self._end(peer, "closed")


def verified_verdict(session_id: bytes, step: int, layer_start: int, layer_end: int, part: Part,
                     agreeing: Sequence[bytes]) -> FeedVerdict:
    """The verdict that a trial (one stage step) was verified by `agreeing` replicas."""
    return FeedVerdict(session_id, step, layer_start, layer_end, part, True, tuple(agreeing)[:9],
                       b"", "", 0, 0, b"")


def slashed_verdicts(evidence: SlashEvidence, offender: bytes, reason: str) -> list[FeedVerdict]:
    """The verdict that `offender` was slashed, its evidence cut into the chunks events carry."""
    att = evidence.offender
    parts = evidence_chunks(encode_struct(evidence))
    return [FeedVerdict(att.session_id, att.step, att.layer_start, att.layer_end, att.part, False,
                        (), offender, reason[:256], k, len(parts), chunk)
            for k, chunk in enumerate(parts)]


async def tell_verdict(node: Node, to: Sequence[bytes], verdicts: Sequence[FeedVerdict]) -> None:
    """Send `verdicts` to each of `to` (the nodes whose feeds show them); a gone node is skipped."""
    for peer in to:
        try:
            for v in verdicts:
                await node.send(peer, v)
        except (PeerUnavailable, ConnectionError) as exc:
            logger.debug("verdict to %s not sent: %s", peer.hex()[:12], exc)


def hop_time_s(node: Node, peer: bytes, fallback_s: float = 0.002) -> float:
    """One-way time to `peer`: half the link's measured RTT, else `fallback_s`."""
    link = node.peers.best(peer)
    rtt = getattr(link, "rtt_ms", None)
    if rtt is None or not math.isfinite(rtt) or rtt <= 0:
        return fallback_s
    return min(rtt / 2000.0, 60.0)

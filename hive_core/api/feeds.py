"""The nodes' live feeds, for the web page: what other askers make the hive do.

`FeedTap` subscribes, through the API server's own mesh node, to the live event feed of every
shard server it is linked to (renewing before each subscription lapses) and hands each event
to the live view. Events of this server's own sessions are skipped (its asker reports them
first-hand), and a slashing is shown only when its signed evidence proves it
(`hive_core.trust.check_evidence`): a node's feed cannot make a page show a forged verdict.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from hive_core.events import EvidenceAssembler, HiveEvent, Slashed, from_feed
from hive_core.exec.audit import auditors_of
from hive_core.mesh.node import Node
from hive_core.protocol.feed import EventKind, FeedAnswer, FeedEvent, FeedSubscribe
from hive_core.trust import EvidenceError, check_evidence

logger = logging.getLogger(__name__)

TTL_S = 30.0  # subscription lifetime asked for
RENEW_S = 10.0  # rounds this far apart renew it well before it lapses
ASK_TIMEOUT_S = 3.0  # a node silent this long has no feed for us (a sentinel)
OWN_SESSIONS = 1024  # our own session ids remembered, to skip their feed echoes


class FeedTap:
    """Feeds of the nodes `node` is linked to, played into `sink` (the live view)."""

    def __init__(self, node: Node, sink: Callable[[HiveEvent], None]) -> None:
        self.node, self.sink = node, sink
        self.subscribed: dict[bytes, float] = {}  # node id -> monotonic time it lapses
        self.events = 0  # events handed on
        self.refused = 0  # events that did not validate (forged, malformed, unproven)
        self._own: OrderedDict[bytes, None] = OrderedDict()
        self._asking: set[bytes] = set()
        self._evidence = EvidenceAssembler()
        node.register_reply(FeedAnswer)
        node.on(FeedEvent, self._on_event)

    def own(self, session_id: bytes) -> None:
        """`session_id` is this server's: its events come from the asker, not the feeds."""
        self._own[session_id] = None
        while len(self._own) > OWN_SESSIONS:
            self._own.popitem(last=False)

    def _on_event(self, peer: bytes, msg: FeedEvent) -> None:
        if peer not in self.subscribed and peer not in self._asking:
            self.refused += 1  # we never asked this node
            return
        if msg.session_id in self._own:
            return
        try:
            evidence = None
            if msg.kind is EventKind.SLASHED:
                evidence = self._evidence.add(peer, msg)
                if evidence is None:
                    return  # more of its evidence is coming
            event = from_feed(msg, peer, time.monotonic(), evidence)
            if isinstance(event, Slashed) and (
                    event.evidence is None or check_evidence(event.evidence) != event.node_id):
                raise EvidenceError("the evidence does not prove this slashing")
        except ValueError as exc:
            self.refused += 1
            logger.info("refused a %s event from %s: %s", msg.kind.name, peer.hex()[:12], exc)
            return
        self.events += 1
        self.sink(event)

    async def subscribe_once(self, targets: list[bytes]) -> int:
        """(Re)subscribe to the feeds of `targets` we are linked to; how many accepted."""

        async def one(peer: bytes) -> bool:
            self._asking.add(peer)  # its first events may arrive before its answer
            try:
                reply: Any = await self.node.request(
                    peer, FeedSubscribe(self.node.next_rpc_id(), True, TTL_S),
                    timeout=ASK_TIMEOUT_S)
            except (ConnectionError, TimeoutError, ValueError):
                reply = None
            finally:
                self._asking.discard(peer)
            if not isinstance(reply, FeedAnswer) or not reply.ok:
                return False
            self.subscribed[peer] = time.monotonic() + reply.ttl_s
            return True

        linked = [t for t in dict.fromkeys(targets)
                  if t != self.node.node_id and self.node.peers.best(t) is not None]
        done = await asyncio.gather(*(one(p) for p in linked))
        now = time.monotonic()
        for peer in [p for p, until in self.subscribed.items() if until < now]:
            del self.subscribed[peer]
        return sum(done)

    async def run(self, targets: Callable[[], list[bytes]]) -> None:
        """Renew every RENEW_S until cancelled."""
        while True:
            try:
                await self.subscribe_once(targets())
            except (ConnectionError, OSError) as exc:
                logger.info("feed round failed: %s", exc)
            await asyncio.sleep(RENEW_S)


class HiveFeeds:
    """Keeps a `FeedTap` on the mesh node of `engine`'s current route, subscribed to every
    node of that route and its spares; the engine's sessions are marked as its own."""

    def __init__(self, engine: Any, sink: Callable[[HiveEvent], None]) -> None:
        self.engine, self.sink = engine, sink
        self.tap: FeedTap | None = None
        self._task: asyncio.Task[None] | None = None
        engine.on_session = self._own

    def _own(self, session_id: bytes) -> None:
        if self.tap is not None:
            self.tap.own(session_id)
            if self.engine.client is not None:  # the session keeping its auditors warm
                self.tap.own(auditors_of(self.engine.client).warm_session)

    def route_changed(self) -> None:
        client = self.engine.client
        if client is None or (self.tap is not None and self.tap.node is client.node):
            return
        if self._task is not None:
            self._task.cancel()
        self.tap = FeedTap(client.node, self.sink)

        def targets() -> list[bytes]:
            now = self.engine.client
            return [] if now is None else [*now.plan.nodes, *now.spares]

        self._task = asyncio.ensure_future(self.tap.run(targets))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

"""Spectating live tensor flow: subscribe to the hive nodes' event feeds, play them in the game.

`FeedWatcher` joins the hive at a ``ws://`` entry as a mesh node of its own (a throwaway
identity, the ``verifier`` role, no layers), links to the nodes the status poll reports,
subscribes to each one's feed (`hive_core.exec.feed`), renewing while it watches, and turns
every `FeedEvent` back into its hive event (`hive_core.events.from_feed`, which refuses a node
reporting on another without proof) for the `GameSource`: pulses, stages, towers, verdicts,
receipts. The game state re-checks a slashing's evidence before a district falls, and a
refused event is logged with its reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from hive_core.base.identity import Identity
from hive_core.events import EvidenceAssembler, from_feed
from hive_core.exec.remote import link_nodes
from hive_core.mesh.hivenode import HiveNode
from hive_core.mesh.node import NodeConfig
from hive_core.mesh.rtc import RTCOptions
from hive_core.protocol.feed import EventKind, FeedAnswer, FeedEvent, FeedSubscribe
from world.view.game_source import GameSource

logger = logging.getLogger(__name__)

RENEW_S = 5.0  # seconds between two subscription rounds
TTL_S = 30.0  # subscription lifetime asked for (renewed well before it lapses)
SUBSCRIBE_WAIT_S = 3.0  # a node silent this long has no feed (a sentinel, an older node)


class FeedWatcher:
    """Keeps `source` playing the events of the hive at `url` (its nodes from `targets()`)."""

    def __init__(self, source: GameSource, url: str, targets: Callable[[], list[bytes]], *,
                 timeout_s: float = 10.0, say: Callable[[str], None] = lambda _m: None) -> None:
        self.source, self.url, self.targets, self.timeout_s, self.say = (
            source, url, targets, timeout_s, say)
        self.hive: Any = None
        self.subscribed: dict[bytes, float] = {}  # node id -> monotonic time the feed lapses
        self.events = 0  # events played
        self.rejected = 0  # events refused (malformed, forged, or about someone else)
        self.last_seq: dict[bytes, int] = {}
        self.lost = 0  # events a node dropped for us (gaps in its sequence)
        self.ready = asyncio.Event()  # set once one feed is subscribed
        self._asking: set[bytes] = set()
        self._evidence = EvidenceAssembler()
        source.state.require_evidence = True  # slashings from the network must prove themselves

    @property
    def node_id(self) -> bytes | None:
        return None if self.hive is None else self.hive.node_id

    async def start(self) -> None:
        config = NodeConfig(join=(self.url,), roles=("verifier",), tflops=0.0,
                            rtc=RTCOptions.loopback(connect_timeout_s=self.timeout_s),
                            request_timeout_s=self.timeout_s)
        self.hive = HiveNode(Identity.generate(), config)
        self.hive.node.register_reply(FeedAnswer)
        self.hive.node.on(FeedEvent, self._on_event)
        await self.hive.start()

    def _on_event(self, peer: bytes, msg: Any) -> None:
        now = time.monotonic()
        if peer not in self.subscribed and peer not in self._asking:
            self.rejected += 1  # we never asked this node
            return
        last = self.last_seq.get(peer)
        if last is not None and msg.seq > last + 1:
            self.lost += msg.seq - last - 1
        self.last_seq[peer] = max(msg.seq, last or 0)
        try:
            evidence = None
            if msg.kind is EventKind.SLASHED:
                evidence = self._evidence.add(peer, msg)
                if evidence is None:
                    return  # more of its evidence is coming
            self.source.on_event(from_feed(msg, peer, now, evidence), now)
        except ValueError as exc:
            self.rejected += 1
            logger.warning("refused a %s event from %s: %s", msg.kind.name, peer.hex()[:12], exc)
            return
        except Exception:  # folding it failed (a bug on odd input): drop it, keep watching
            self.rejected += 1
            logger.exception("dropped a %s event from %s", msg.kind.name, peer.hex()[:12])
            return
        self.events += 1

    async def subscribe_once(self) -> int:
        """Link to the nodes `targets()` names and (re)subscribe to their feeds; returns how many."""
        node = self.hive.node
        linked_now = [link.node_id for link in node.peers.all()]  # mesh neighbours may serve too
        targets = [t for t in dict.fromkeys([*self.targets(), *linked_now]) if t != node.node_id]
        await link_nodes(self.hive, targets, self.timeout_s)

        async def one(peer: bytes) -> bool:
            self._asking.add(peer)  # its first events may arrive before its answer
            try:
                reply = await node.request(peer, FeedSubscribe(node.next_rpc_id(), True, TTL_S),
                                           timeout=min(self.timeout_s, SUBSCRIBE_WAIT_S))
            except Exception:  # noqa: BLE001 - silent, refusing or gone: that node has no feed for us
                reply = None
            finally:
                self._asking.discard(peer)
            if not isinstance(reply, FeedAnswer) or not reply.ok:
                return False
            self.subscribed[peer] = time.monotonic() + reply.ttl_s
            return True

        linked = [t for t in targets if node.peers.best(t) is not None]
        done = await asyncio.gather(*(one(p) for p in linked))
        count = sum(done)
        now = time.monotonic()
        for peer in [p for p, until in self.subscribed.items() if until < now]:
            del self.subscribed[peer]
        if count:
            self.ready.set()
        return count

    async def run(self, interval_s: float = RENEW_S, *, first_now: bool = True) -> None:
        """Subscribe (now, or after `interval_s`), then renew every `interval_s` until cancelled."""
        if not first_now:
            await asyncio.sleep(interval_s)
        while True:
            try:
                count = await self.subscribe_once()
            except (ConnectionError, OSError) as exc:
                self.source.hud.set(routing=f"feed round failed: {exc}")
            except Exception as exc:  # one bad round must not end the renewals
                logger.exception("feed round failed")
                self.source.hud.set(routing=f"feed round failed: {type(exc).__name__}")
            else:
                self.source.hud.set(consensus=f"live feed: {count} node(s)")
            await asyncio.sleep(interval_s)

    async def close(self) -> None:
        if self.hive is not None:
            await self.hive.close()
            self.hive = None

"""Spectating live tensor flow: subscribe to the hive nodes' event feeds, play them in the game.

`FeedWatcher` joins the hive at a ``ws://`` entry as a mesh node of its own (a throwaway
identity, the ``verifier`` role, no layers), links to the nodes the status poll reports,
subscribes to each one's feed (`hive_core.exec.feed`), renewing while it watches, and turns
every `FeedEvent` into a `world.game` event for the `GameSource`: pulses, stages, towers,
verdicts, receipts. A node may only report on itself: an event naming another worker is
refused, except a slashing, whose signed evidence (reassembled from its chunks) must prove
it; the game state re-checks that evidence before a district falls, and a refused event is
logged with its reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .game_source import GameSource

logger = logging.getLogger(__name__)

RENEW_S = 5.0  # seconds between two subscription rounds
TTL_S = 30.0  # subscription lifetime asked for (renewed well before it lapses)
SUBSCRIBE_WAIT_S = 3.0  # a node silent this long has no feed (a sentinel, an older node)


MAX_ASSEMBLIES = 8  # slashings whose evidence is still arriving, kept at once


def trial_step(step: int, layer_start: int, part: int) -> int:
    """The game's trial number for one stage step: the stages of a step are separate towers."""
    return (step << 18) | (int(part) << 16) | layer_start


class EvidenceAssembler:
    """Joins the chunks of slashing evidence, per sender and slashing, with bounded memory."""

    def __init__(self, max_pending: int = MAX_ASSEMBLIES) -> None:
        self.max_pending = max_pending
        self._parts: OrderedDict[tuple[object, ...], list[bytes | None]] = OrderedDict()

    def add(self, sender: bytes, msg: Any) -> bytes | None:
        """The whole evidence once `msg` completes it, else None (more chunks to come)."""
        from hive_core.protocol.feed import MAX_EVIDENCE_BYTES

        key = (sender, msg.session_id, msg.step, msg.layer_start, msg.part, msg.node)
        parts = self._parts.get(key)
        if parts is None or len(parts) != msg.chunks:
            parts = self._parts[key] = [None] * msg.chunks
            while len(self._parts) > self.max_pending:
                self._parts.popitem(last=False)  # the oldest unfinished one is given up
        parts[msg.chunk] = msg.evidence
        if any(p is None for p in parts):
            return None
        del self._parts[key]
        body = b"".join(p for p in parts if p is not None)
        if len(body) > MAX_EVIDENCE_BYTES:
            raise ValueError(f"slashing evidence of {len(body)} bytes is over the limit")
        return body


def slashing(msg: Any, body: bytes, at: float) -> Any:
    """The `Slashed` game event for a SLASHED `FeedEvent` whose evidence is `body`.

    Raises ValueError when the evidence does not decode or is about another trial or node
    (the game state then checks that it proves the slashing)."""
    from hive_core.protocol import decode_struct
    from hive_core.protocol.feed import MAX_EVIDENCE_BYTES
    from hive_core.protocol.trust import SlashEvidence
    from hive_core.trust import worker_id
    from world.game import events as ev

    evidence = decode_struct(body, SlashEvidence, MAX_EVIDENCE_BYTES)
    att = evidence.offender
    if (att.session_id, att.step, att.layer_start, att.layer_end, att.part) != (
            msg.session_id, msg.step, msg.layer_start, msg.layer_end, msg.part):
        raise ValueError("the slashing's evidence is about another stage step")
    if worker_id(att) != msg.node:
        raise ValueError("the slashing's evidence is against another node")
    return ev.Slashed(msg.session_id, trial_step(msg.step, msg.layer_start, msg.part), msg.node,
                      msg.reason, at, evidence)


def game_event(msg: Any, sender: bytes, now: float, evidence: bytes | None = None) -> Any:
    """The `world.game` event for a `FeedEvent` from `sender`, dated on this clock at `now`;
    a SLASHED event needs its whole `evidence` (see `EvidenceAssembler`).

    Raises ValueError (`GameEventError`, `ReceiptError`, ...) for an event that does not
    validate or that reports on a node other than its sender without proof.
    """
    from hive_core.economy import WorkReceipt
    from hive_core.protocol.feed import FeedKind
    from world.game import events as ev

    at = max(0.0, now - msg.age_s)
    kind = msg.kind
    if kind is FeedKind.SLASHED:
        if evidence is None:
            raise ValueError(f"{sender.hex()[:12]} reported a slashing without its evidence")
        return slashing(msg, evidence, at)
    if msg.node != sender:
        raise ValueError(f"{sender.hex()[:12]} reported on another node {msg.node.hex()[:12]}")
    if kind is FeedKind.STAGE_STARTED:
        return ev.StageStarted(msg.session_id, msg.node, msg.layer_start, msg.layer_end, msg.part, at)
    if kind is FeedKind.HOP_SENT:
        return ev.HopSent(msg.session_id, msg.peer, msg.node, max(0.0, at - 2 * msg.duration_s),
                          msg.duration_s, 0)
    trial = trial_step(msg.step, msg.layer_start, msg.part)
    if kind is FeedKind.REPLICA_ANSWERED:
        # A server does not know the quorum its asker wants: two agreeing answers at least.
        return ev.ReplicaAnswered(msg.session_id, trial, msg.node, msg.root, at, max(2, msg.quorum))
    if kind is FeedKind.VERIFIED:
        return ev.Verified(msg.session_id, trial, (msg.node,), at)
    receipt = WorkReceipt.parse(msg.receipt)
    if receipt.worker_id != sender:
        raise ValueError(f"{sender.hex()[:12]} forwarded a receipt for another worker")
    return ev.ReceiptIssued(receipt, at)


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
        from hive_core.base.identity import Identity
        from hive_core.mesh.hivenode import HiveNode
        from hive_core.mesh.node import NodeConfig
        from hive_core.mesh.rtc import RTCOptions
        from hive_core.protocol.feed import FeedAnswer, FeedEvent

        config = NodeConfig(join=(self.url,), roles=("verifier",), tflops=0.0,
                            rtc=RTCOptions.loopback(connect_timeout_s=self.timeout_s),
                            request_timeout_s=self.timeout_s)
        self.hive = HiveNode(Identity.generate(), config)
        self.hive.node.register_reply(FeedAnswer)
        self.hive.node.on(FeedEvent, self._on_event)
        await self.hive.start()

    def _on_event(self, peer: bytes, msg: Any) -> None:
        from hive_core.protocol.feed import FeedKind

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
            if msg.kind is FeedKind.SLASHED:
                evidence = self._evidence.add(peer, msg)
                if evidence is None:
                    return  # more of its evidence is coming
            self.source.on_event(game_event(msg, peer, now, evidence), now)
        except ValueError as exc:
            self.rejected += 1
            logger.warning("refused a %s event from %s: %s", msg.kind.name, peer.hex()[:12], exc)
            return
        self.events += 1

    async def subscribe_once(self) -> int:
        """Link to the nodes `targets()` names and (re)subscribe to their feeds; returns how many."""
        from hive_core.exec.remote import link_nodes
        from hive_core.protocol.feed import FeedAnswer, FeedSubscribe

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
            else:
                self.source.hud.set(consensus=f"live feed: {count} node(s)")
            await asyncio.sleep(interval_s)

    async def close(self) -> None:
        if self.hive is not None:
            await self.hive.close()
            self.hive = None

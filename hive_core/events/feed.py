"""The one mapping between hive events and the feed's wire message (`FeedEvent`), both ways.

A node reports on itself: `to_feed` turns the events it emits about its own work into the
frames its spectators receive, and `from_feed` turns a frame back into the same event type,
re-dated on the spectator's clock. A node may only report on itself, so an event naming
another worker is refused, except a slashing, whose signed evidence (reassembled from its
chunks by `EvidenceAssembler`) must name that worker; `world.game.GameState` re-checks the
evidence itself before a district falls.
"""

from __future__ import annotations

from collections import OrderedDict

from hive_core.base.codec import decode_struct
from hive_core.base.ids import short
from hive_core.economy import WorkReceipt
from hive_core.events.types import (
    EventError,
    HiveEvent,
    HopSent,
    ReceiptIssued,
    ReplicaAnswered,
    Slashed,
    StageStarted,
    Verified,
    trial_fields,
    trial_id,
)
from hive_core.protocol.feed import MAX_EVIDENCE_BYTES, EventKind, FeedEvent, feed_event
from hive_core.protocol.trust import SlashEvidence
from hive_core.trust import worker_id

MAX_ASSEMBLIES = 8  # slashings whose evidence is still arriving, kept at once
MIN_QUORUM = 2  # a server does not know the quorum its asker wants: two agreeing answers at least


def to_feed(event: HiveEvent) -> FeedEvent:
    """The frame a node sends its spectators for `event` (`seq` and `age_s` set when sent).

    Raises EventError for a kind a node does not report on its own feed (verdicts come from
    the asker as `FeedVerdict`s; health and departures travel in the DHT).
    """
    if isinstance(event, StageStarted):
        return feed_event(EventKind.STAGE_STARTED, event.node_id, session_id=event.session_id,
                          layer_start=event.layer_start, layer_end=event.layer_end, part=event.part)
    if isinstance(event, HopSent):
        return feed_event(EventKind.HOP_SENT, event.to_node, session_id=event.session_id,
                          peer=event.from_node, duration_s=event.hop_time_s, nbytes=event.nbytes)
    if isinstance(event, ReplicaAnswered):
        step, layer_start, part = trial_fields(event.step)
        return feed_event(EventKind.REPLICA_ANSWERED, event.node_id, session_id=event.session_id,
                          step=step, layer_start=layer_start, part=part, root=event.digest,
                          quorum=min(event.quorum, 255))
    if isinstance(event, ReceiptIssued):
        r = event.receipt
        return feed_event(EventKind.RECEIPT_ISSUED, r.worker_id, session_id=r.session_id,
                          receipt=bytes(r))
    raise EventError(f"a node does not report {type(event).__name__} on its own feed")


def from_feed(msg: FeedEvent, sender: bytes, now: float, evidence: bytes | None = None) -> HiveEvent:
    """The hive event for a `FeedEvent` from `sender`, dated on this clock at `now`; a SLASHED
    event needs its whole `evidence` (see `EvidenceAssembler`).

    Raises ValueError (`EventError`, `ReceiptError`, `ProtocolError`) for an event that does
    not validate or that reports on a node other than its sender without proof.
    """
    at = max(0.0, now - msg.age_s)
    kind = msg.kind
    if kind is EventKind.SLASHED:
        if evidence is None:
            raise EventError(f"{short(sender)} reported a slashing without its evidence")
        return _slashing(msg, evidence, at)
    if msg.node != sender:
        raise EventError(f"{short(sender)} reported on another node {short(msg.node)}")
    if kind is EventKind.STAGE_STARTED:
        return StageStarted(msg.session_id, msg.node, msg.layer_start, msg.layer_end, msg.part, at)
    if kind is EventKind.HOP_SENT:
        # Published when the answer went back: the hop began a round trip earlier.
        return HopSent(msg.session_id, msg.peer, msg.node, max(0.0, at - 2 * msg.duration_s),
                       msg.duration_s, msg.nbytes)
    trial = trial_id(msg.step, msg.layer_start, msg.part)
    if kind is EventKind.REPLICA_ANSWERED:
        return ReplicaAnswered(msg.session_id, trial, msg.node, msg.root, at,
                               max(MIN_QUORUM, msg.quorum))
    if kind is EventKind.VERIFIED:
        return Verified(msg.session_id, trial, (msg.node,), at)
    if kind is EventKind.RECEIPT_ISSUED:
        receipt = WorkReceipt.parse(msg.receipt)
        if receipt.worker_id != sender:
            raise EventError(f"{short(sender)} forwarded a receipt for another worker")
        return ReceiptIssued(receipt, at)
    raise EventError(f"{kind.name} events are not carried by the feed")


def _slashing(msg: FeedEvent, body: bytes, at: float) -> Slashed:
    """The `Slashed` event for a SLASHED frame whose evidence is `body`; ValueError when the
    evidence does not decode or is about another stage step or node."""
    evidence = decode_struct(body, SlashEvidence, MAX_EVIDENCE_BYTES)
    att = evidence.offender
    if (att.session_id, att.step, att.layer_start, att.layer_end, att.part) != (
            msg.session_id, msg.step, msg.layer_start, msg.layer_end, msg.part):
        raise EventError("the slashing's evidence is about another stage step")
    if worker_id(att) != msg.node:
        raise EventError("the slashing's evidence is against another node")
    return Slashed(msg.session_id, trial_id(msg.step, msg.layer_start, msg.part), msg.node,
                   msg.reason, at, evidence)


class EvidenceAssembler:
    """Joins the chunks of slashing evidence, per sender and slashing, with bounded memory."""

    def __init__(self, max_pending: int = MAX_ASSEMBLIES) -> None:
        self.max_pending = max_pending
        self._parts: OrderedDict[tuple[object, ...], list[bytes | None]] = OrderedDict()

    def add(self, sender: bytes, msg: FeedEvent) -> bytes | None:
        """The whole evidence once `msg` completes it, else None (more chunks to come)."""
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
            raise EventError(f"slashing evidence of {len(body)} bytes is over the limit")
        return body

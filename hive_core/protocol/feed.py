"""Live event feed wire messages (tags 0x48-0x4B): spectators subscribe to a node's hive events.

A shard server publishes what it does (stage started, hop served, answer attested, receipt
kept) to the spectators that subscribed, and the verdicts its asker sends it (`FeedVerdict`:
a trial verified, a replica slashed). A `FeedEvent` is the wire form of a hive event
(`hive_core.events`, whose `feed` module is the one mapping both ways). Events carry only
node ids, opaque session ids, layer spans, durations, Merkle roots, verdicts and signed
receipts: never token ids or text. The one
exception is a slashing's evidence (`hive_core.trust`: the signed outputs of the liar and
of its witnesses for that one stage step), since without those hidden states nobody could
re-check the verdict; it travels in chunks of `EVIDENCE_CHUNK` bytes.
Times are relative (`age_s`, durations): monotonic clocks differ between machines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated

from hive_core.base.codec import message
from hive_core.base.errors import ProtocolError
from hive_core.base.fields import Blob, Bool, EnumOf, Fixed, Float, ListOf, Text, UInt
from hive_core.base.ids import SESSION_BYTES
from hive_core.base.stage import Part
from hive_core.economy.errors import ReceiptError
from hive_core.economy.receipt import MAX_SIZE as MAX_RECEIPT_BYTES
from hive_core.economy.receipt import WorkReceipt
from hive_core.protocol.trust import MAX_WITNESSES

NODE_BYTES = 20
MAX_ROOT = 64
MAX_AGE_S = 3600.0
MAX_DURATION_S = 3600.0
EVIDENCE_CHUNK = 192 * 1024  # evidence bytes per event: a frame stays under MAX_FRAME_BYTES
MAX_EVIDENCE_BYTES = 4 * 1024 * 1024  # a whole piece of evidence, reassembled
MAX_EVIDENCE_CHUNKS = -(-MAX_EVIDENCE_BYTES // EVIDENCE_CHUNK)


class FeedMsgType(IntEnum):
    """Tags of the feed messages (in the exec range, after `ExecMsgType`)."""

    FEED_SUBSCRIBE = 0x48
    FEED_ANSWER = 0x49
    FEED_EVENT = 0x4A
    FEED_VERDICT = 0x4B


class EventKind(IntEnum):
    """What a hive event (`hive_core.events`) reports; the feed carries kinds 1-6."""

    STAGE_STARTED = 1  # node began serving layers of a session
    HOP_SENT = 2  # a tensor went peer -> node and back; duration_s: one-way hop time
    REPLICA_ANSWERED = 3  # node's output for (session, step) has Merkle root `root`
    VERIFIED = 4  # (session, step, stage) agreed; node is one agreeing replica (the sender)
    SLASHED = 5  # node was slashed on (session, step, stage); `evidence` proves it, in chunks
    RECEIPT_ISSUED = 6  # `receipt` is a client-signed WorkReceipt for node's work
    HEALTH_UPDATED = 7  # a node's Health Vector changed (the DHT carries it, not the feed)
    NODE_LEFT = 8  # a node left the hive (seen by its peers, not reported by itself)


FEED_KINDS = frozenset(EventKind) - {EventKind.HEALTH_UPDATED, EventKind.NODE_LEFT}


@message(FeedMsgType.FEED_SUBSCRIBE)
@dataclass(frozen=True)
class FeedSubscribe:
    """Send me your events for `ttl_s` seconds (renew before then); `on=False` stops them."""

    rpc_id: Annotated[int, UInt(8)]
    on: Annotated[bool, Bool()]
    ttl_s: Annotated[float, Float()]

    def __post_init__(self) -> None:
        if not (math.isfinite(self.ttl_s) and 0.0 <= self.ttl_s <= MAX_AGE_S):
            raise ProtocolError(f"ttl_s must be in [0, {MAX_AGE_S:g}], got {self.ttl_s!r}")


@message(FeedMsgType.FEED_ANSWER)
@dataclass(frozen=True)
class FeedAnswer:
    """Reply to a FeedSubscribe: accepted (for `ttl_s`) or refused with a reason."""

    rpc_id: Annotated[int, UInt(8)]
    ok: Annotated[bool, Bool()]
    error: Annotated[str, Text(128)]  # empty when ok
    ttl_s: Annotated[float, Float()]


@message(FeedMsgType.FEED_EVENT)
@dataclass(frozen=True)
class FeedEvent:
    """One hive event seen by the sending node (fields a kind does not use are zero/empty)."""

    seq: Annotated[int, UInt(8)]  # per-publisher counter: a gap means events were dropped
    kind: Annotated[EventKind, EnumOf(EventKind)]
    age_s: Annotated[float, Float()]  # how long ago it happened, when it was sent
    session_id: Annotated[bytes, Blob(SESSION_BYTES)]  # opaque; empty for none
    node: Annotated[bytes, Fixed(NODE_BYTES)]  # the worker the event is about
    peer: Annotated[bytes, Blob(NODE_BYTES)]  # HOP_SENT: the node the tensor came from
    layer_start: Annotated[int, UInt(2)]
    layer_end: Annotated[int, UInt(2)]
    part: Annotated[Part, EnumOf(Part)]
    step: Annotated[int, UInt(4)]
    duration_s: Annotated[float, Float()]  # HOP_SENT: one-way hop time
    nbytes: Annotated[int, UInt(4)]  # HOP_SENT: payload size
    root: Annotated[bytes, Blob(MAX_ROOT)]  # REPLICA_ANSWERED: Merkle root of the output
    quorum: Annotated[int, UInt(1)]
    reason: Annotated[str, Text(256)]  # SLASHED
    receipt: Annotated[bytes, Blob(MAX_RECEIPT_BYTES)]  # RECEIPT_ISSUED: WorkReceipt bytes
    chunk: Annotated[int, UInt(2)]  # SLASHED: which part of the evidence this is, from 0
    chunks: Annotated[int, UInt(2)]  # SLASHED: how many parts the evidence has
    evidence: Annotated[bytes, Blob(EVIDENCE_CHUNK)]  # SLASHED: part of a SlashEvidence body

    def __post_init__(self) -> None:
        for name, value, top in (("age_s", self.age_s, MAX_AGE_S),
                                 ("duration_s", self.duration_s, MAX_DURATION_S)):
            if not (math.isfinite(value) and 0.0 <= value <= top):
                raise ProtocolError(f"{name} must be in [0, {top:g}], got {value!r}")
        kind = self.kind
        if kind not in FEED_KINDS:
            raise ProtocolError(f"{kind.name} events are not carried by the feed")
        if kind is not EventKind.RECEIPT_ISSUED and not self.session_id:
            raise ProtocolError(f"{kind.name} needs a session id")
        if kind is EventKind.STAGE_STARTED and self.layer_end <= self.layer_start:
            raise ProtocolError(f"empty layer range {self.layer_start}..{self.layer_end}")
        if kind is EventKind.HOP_SENT and (len(self.peer) != NODE_BYTES or self.peer == self.node
                                          or self.duration_s <= 0):
            raise ProtocolError("a hop needs another node as its source and a duration > 0")
        if kind is EventKind.REPLICA_ANSWERED and not self.root:
            raise ProtocolError("a replica answer needs its Merkle root")
        if kind is EventKind.RECEIPT_ISSUED:
            try:
                WorkReceipt.parse(self.receipt)
            except ReceiptError as exc:
                raise ProtocolError(f"a receipt event needs valid receipt bytes: {exc}") from exc
        if kind is EventKind.SLASHED:
            _check_chunk(self.chunk, self.chunks, self.evidence)


@message(FeedMsgType.FEED_VERDICT)
@dataclass(frozen=True)
class FeedVerdict:
    """Asker -> a node that served the trial: the verdict on it, for that node's spectators.

    Verified: `agreeing` lists the replicas whose answers were accepted. Slashed: `offender`
    lost stake, `evidence` is one chunk of the encoded `SlashEvidence` that proves it.
    """

    session_id: Annotated[bytes, Blob(SESSION_BYTES)]
    step: Annotated[int, UInt(4)]  # the stage step, as in RunStage
    layer_start: Annotated[int, UInt(2)]
    layer_end: Annotated[int, UInt(2)]
    part: Annotated[Part, EnumOf(Part)]
    verified: Annotated[bool, Bool()]  # True: a verified trial; False: a slashing
    agreeing: Annotated[tuple[bytes, ...], ListOf(Fixed(NODE_BYTES), MAX_WITNESSES + 1)]
    offender: Annotated[bytes, Blob(NODE_BYTES)]  # slashed node; empty when verified
    reason: Annotated[str, Text(256)]
    chunk: Annotated[int, UInt(2)]
    chunks: Annotated[int, UInt(2)]
    evidence: Annotated[bytes, Blob(EVIDENCE_CHUNK)]

    def __post_init__(self) -> None:
        if not self.session_id:
            raise ProtocolError("a verdict needs a session id")
        if self.layer_end <= self.layer_start:
            raise ProtocolError(f"empty layer range {self.layer_start}..{self.layer_end}")
        if self.verified:
            if not self.agreeing or self.offender or self.evidence:
                raise ProtocolError("a verified trial names its agreeing nodes and no offender")
        else:
            if len(self.offender) != NODE_BYTES:
                raise ProtocolError("a slashing names its offender")
            _check_chunk(self.chunk, self.chunks, self.evidence)


def _check_chunk(chunk: int, chunks: int, data: bytes) -> None:
    if not 0 <= chunk < chunks <= MAX_EVIDENCE_CHUNKS or not data:
        raise ProtocolError(f"evidence chunk {chunk} of {chunks} is out of range "
                            f"(at most {MAX_EVIDENCE_CHUNKS} non-empty chunks)")


def evidence_chunks(body: bytes) -> list[bytes]:
    """`body` (an encoded SlashEvidence) cut into the chunks its events carry."""
    if not body or len(body) > MAX_EVIDENCE_BYTES:
        raise ProtocolError(f"evidence of {len(body)} bytes: must be 1..{MAX_EVIDENCE_BYTES}")
    return [body[i:i + EVIDENCE_CHUNK] for i in range(0, len(body), EVIDENCE_CHUNK)]


def feed_event(kind: EventKind, node: bytes, *, session_id: bytes = b"", peer: bytes = b"",
               layer_start: int = 0, layer_end: int = 0, part: Part = Part.FULL, step: int = 0,
               duration_s: float = 0.0, nbytes: int = 0, root: bytes = b"", quorum: int = 1,
               reason: str = "", receipt: bytes = b"", chunk: int = 0, chunks: int = 0,
               evidence: bytes = b"") -> FeedEvent:
    """A FeedEvent with the unused fields zeroed (`seq` and `age_s` are set when it is sent)."""
    return FeedEvent(0, kind, 0.0, session_id, node, peer, layer_start, layer_end, part, step,
                     duration_s, nbytes, root, quorum, reason[:256], receipt, chunk, chunks,
                     evidence)

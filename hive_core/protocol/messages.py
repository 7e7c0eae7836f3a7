"""The core message set: handshake, liveness, errors, signaling relay and DHT RPCs."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated

from hive_core.base.codec import Nested, message, wire_struct
from hive_core.base.errors import ProtocolError
from hive_core.base.fields import Blob, Bool, EnumOf, Fixed, Float, ListOf, Text, UInt
from hive_core.base.identity import node_id_of
from hive_core.base.ids import ID_BYTES, KEY_BYTES, SIGNATURE_BYTES

NONCE_BYTES = 16
MAX_ADDRESS_BYTES = 256
MAX_REASON_BYTES = 1024
MAX_SDP_BYTES = 64 * 1024
MAX_CONTACTS = 64  # per reply; k is 20 by default
MAX_RECORDS = 32  # records of one key returned by one FIND_VALUE
MAX_RECORD_VALUE_BYTES = 8 * 1024


class MsgType(IntEnum):
    """Tags of the core messages. Ranges reserved for later message families:

    0x30-0x3F mesh runtime (status, join bookkeeping), 0x40-0x7F inference/exec, 0x80-0x9F trust, 0xA0-0xBF economy,
    0xC0-0xDF world/CRDT sync, 0xE0-0xFF experiments.
    """

    HELLO = 0x01
    BYE = 0x02
    PING = 0x03
    PONG = 0x04
    ERROR = 0x05
    SIGNAL = 0x08
    FIND_NODE = 0x10
    FIND_VALUE = 0x11
    STORE = 0x12
    NODES = 0x13
    VALUE = 0x14
    STORED = 0x15
    TENSOR = 0x20


class SignalKind(IntEnum):
    """What a relayed signaling message carries."""

    OFFER = 1
    ANSWER = 2
    CANDIDATE = 3
    BYE = 4


class ErrorCode(IntEnum):
    """Why a peer refused or failed a request: the receiver acts on the code, never on the text
    (which is for people). `OK` only appears in replies that carry a code beside a result."""

    OK = 0
    MALFORMED = 1
    UNAUTHENTICATED = 2
    REPLAYED = 3
    UNSUPPORTED = 4
    OVERLOADED = 5
    NOT_FOUND = 6
    INTERNAL = 7
    NEEDS_REBUILD = 8  # the session's KV cache is gone or behind the input: resend from cache_len


U8 = Annotated[int, UInt(1)]
U16 = Annotated[int, UInt(2)]
U64 = Annotated[int, UInt(8)]
NodeId = Annotated[bytes, Fixed(ID_BYTES)]
PublicKey = Annotated[bytes, Fixed(KEY_BYTES)]
Signature = Annotated[bytes, Fixed(SIGNATURE_BYTES)]


@wire_struct
@dataclass(frozen=True)
class Contact:
    """How to name and reach a node; `node_id` must be the hash of `public_key`."""

    node_id: NodeId
    public_key: PublicKey
    address: Annotated[str, Text(MAX_ADDRESS_BYTES)]  # transport hint: ws://..., mesh, sim:N

    def __post_init__(self) -> None:
        if len(self.public_key) == KEY_BYTES and node_id_of(self.public_key) != self.node_id:
            raise ProtocolError("contact node id does not match its public key")


@wire_struct
@dataclass(frozen=True)
class SignedRecord:
    """A DHT value signed by its owner; see `hive_core.mesh.dht.records` for its meaning."""

    key: NodeId  # DHT key the record lives under
    kind: U16  # RecordKind
    owner_key: PublicKey  # the owner's Ed25519 key; its hash is the owner id
    seq: U64  # monotonic per (key, owner): higher replaces lower
    expires_at_ms: U64  # unix milliseconds; stale afterwards unless republished
    value: Annotated[bytes, Blob(MAX_RECORD_VALUE_BYTES)]  # codec-encoded typed value
    signature: Signature  # over record_signing_bytes(...)


@message(MsgType.HELLO)
@dataclass(frozen=True)
class Hello:
    """First frame on every link (the join): proves the sender holds `public_key`."""

    public_key: PublicKey
    timestamp_ms: U64  # sender's unix clock; refused outside the replay window
    nonce: Annotated[bytes, Fixed(NONCE_BYTES)]  # refused if seen within the window
    audience: Annotated[bytes, Blob(ID_BYTES)]  # node id this hello is meant for, or b"" (any)
    listen: Annotated[str, Text(MAX_ADDRESS_BYTES)]  # how others may reach the sender, or ""
    agent: Annotated[str, Text(64)]  # software name/version
    signature: Signature  # over hello_signing_bytes(...)


@message(MsgType.BYE)
@dataclass(frozen=True)
class Bye:
    """Orderly leave; the receiver may drop the link at once."""

    reason: Annotated[str, Text(MAX_REASON_BYTES)]


@message(MsgType.PING)
@dataclass(frozen=True)
class Ping:
    """Liveness and RTT probe; answered by a Pong with the same `rpc_id` and `sent_at`."""

    rpc_id: U64  # nonce matching the Pong
    sent_at: Annotated[float, Float()]  # sender's monotonic clock, echoed back


@message(MsgType.PONG)
@dataclass(frozen=True)
class Pong:
    """Answer to a Ping."""

    rpc_id: U64
    sent_at: Annotated[float, Float()]


@message(MsgType.ERROR)
@dataclass(frozen=True)
class Error:
    """A refusal or failure; `rpc_id` is the request's, or 0 if not tied to one."""

    rpc_id: U64
    code: Annotated[ErrorCode, EnumOf(ErrorCode, 2)]
    message: Annotated[str, Text(MAX_REASON_BYTES)]

    def __post_init__(self) -> None:
        if self.code is ErrorCode.OK:
            raise ProtocolError("an Error must say what went wrong (code OK)")


@message(MsgType.SIGNAL)
@dataclass(frozen=True)
class Signal:
    """WebRTC signaling relayed by a sentinel or by mesh peers, signed by its sender.

    `ttl` and `hops` change at each relay and are outside the signature.
    """

    session: U64  # one connection attempt
    from_id: NodeId
    to_id: NodeId
    kind: Annotated[SignalKind, EnumOf(SignalKind)]
    sdp: Annotated[str, Text(MAX_SDP_BYTES)]  # SDP, or a candidate line
    sender_key: PublicKey  # hash must equal from_id
    sent_at_ms: U64
    ttl: U8  # relays left
    hops: U8  # relays taken
    signature: Signature  # over signal_signing_bytes(...)


@message(MsgType.FIND_NODE)
@dataclass(frozen=True)
class FindNode:
    """DHT: the k contacts the receiver knows closest to `target`."""

    rpc_id: U64
    target: NodeId


@message(MsgType.FIND_VALUE)
@dataclass(frozen=True)
class FindValue:
    """DHT: records stored under `key`, or else the closest contacts."""

    rpc_id: U64
    key: NodeId


@message(MsgType.STORE)
@dataclass(frozen=True)
class Store:
    """DHT: keep `record` until it expires."""

    rpc_id: U64
    record: Annotated[SignedRecord, Nested(SignedRecord)]


@message(MsgType.NODES)
@dataclass(frozen=True)
class Nodes:
    """DHT reply to FIND_NODE."""

    rpc_id: U64
    contacts: Annotated[tuple[Contact, ...], ListOf(Nested(Contact), MAX_CONTACTS)]


@message(MsgType.VALUE)
@dataclass(frozen=True)
class Value:
    """DHT reply to FIND_VALUE: the records held (possibly none) and closer contacts."""

    rpc_id: U64
    records: Annotated[tuple[SignedRecord, ...], ListOf(Nested(SignedRecord), MAX_RECORDS)]
    contacts: Annotated[tuple[Contact, ...], ListOf(Nested(Contact), MAX_CONTACTS)]


@message(MsgType.STORED)
@dataclass(frozen=True)
class Stored:
    """DHT reply to STORE."""

    rpc_id: U64
    accepted: Annotated[bool, Bool()]
    reason: Annotated[str, Text(MAX_REASON_BYTES)]  # why it was refused, or ""

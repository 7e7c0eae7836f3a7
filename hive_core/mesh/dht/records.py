"""DHT records: typed values (health, roles, layer spans, reachability, verdicts) signed by their owner."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Annotated, Any

from hive_core.base.health import HealthRecord
from hive_core.base.identity import Identity, IdentityError, node_id_of, verify
from hive_core.mesh.dht.distance import key_of
from hive_core.protocol import (
    MAX_RECORD_VALUE_BYTES,
    Blob,
    EnumOf,
    Fixed,
    Float,
    ListOf,
    Maybe,
    Nested,
    ProtocolError,
    SignedRecord,
    Text,
    UInt,
    decode_struct,
    encode_struct,
    wire_struct,
)

log = logging.getLogger(__name__)

_DOMAIN = b"cadencia/dht-record/v1\x00"
MAX_TTL_S = 24 * 3600.0  # a record may not claim to live longer than this
CLOCK_SKEW_S = 60.0  # tolerated difference between the owner's clock and ours
SPAN_WEIGHTS = ("", "packed", "fp32", "bf16")  # hive_core.model.modes, or not said


class RecordError(ValueError):
    """A DHT record is forged, expired, stale, misplaced or holds a malformed value."""


class RecordKind(IntEnum):
    """What a record's value is; node kinds live under `node_key(owner, kind)`."""

    HEALTH = 1
    ROLES = 2
    REACH = 3
    LAYER_SPAN = 4
    LINKS = 5
    SERVING = 6
    VERDICT = 7  # a node's checked conviction or ban of another, under `verdict_key(offender)`
    EVIDENCE = 8  # a chunk of the evidence behind a verdict, under `evidence_key(digest, i)`


class Role(IntEnum):
    """What a node offers the hive."""

    ALPHA = 1  # attention
    BETA = 2  # MLP
    SENTINEL = 3  # bootstrap and signaling relay
    VERIFIER = 4  # replica checks


F64 = Annotated[float, Float()]
OptF64 = Annotated[float | None, Maybe(Float())]


@wire_struct
@dataclass(frozen=True)
class RolesRecord:
    """The roles a node takes."""

    roles: Annotated[tuple[Role, ...], ListOf(EnumOf(Role), 8)]


@wire_struct
@dataclass(frozen=True)
class ReachRecord:
    """How to reach a node: direct addresses and mesh peers that relay signaling to it."""

    addresses: Annotated[tuple[str, ...], ListOf(Text(256), 8)]  # ws://host:port ...
    relays: Annotated[tuple[bytes, ...], ListOf(Fixed(20), 16)]  # node ids linked to it


@wire_struct
@dataclass(frozen=True)
class LayerSpanRecord:
    """Layers [start, end) of `model` that the owner serves; stored under each layer's key."""

    model: Annotated[str, Text(128)]
    start: Annotated[int, UInt(2)]
    end: Annotated[int, UInt(2)]
    n_layers: Annotated[int, UInt(2)]
    weights: Annotated[str, Text(8)] = ""  # how the owner holds the matrices; "": not said

    def __post_init__(self) -> None:
        if not self.start < self.end <= self.n_layers:
            raise ValueError(f"bad layer span [{self.start}, {self.end}) of {self.n_layers}")
        if self.weights not in SPAN_WEIGHTS:
            raise ValueError(f"unknown weights mode {self.weights!r}")


@wire_struct
@dataclass(frozen=True)
class ServingRecord:
    """Every span the owner serves, under its own node key: what `hive status` shows."""

    spans: Annotated[tuple[LayerSpanRecord, ...], ListOf(Nested(LayerSpanRecord), 8)]


@wire_struct
@dataclass(frozen=True)
class LinkRtt:
    """Measured round trip from the owner to one peer."""

    node_id: Annotated[bytes, Fixed(20)]
    rtt_ms: F64  # EWMA of pings


@wire_struct
@dataclass(frozen=True)
class LinksRecord:
    """The owner's links and their RTTs: a row of the hive's latency matrix."""

    peers: Annotated[tuple[LinkRtt, ...], ListOf(Nested(LinkRtt), 64)]


class VerdictKind(IntEnum):
    """What a verdict record says of its offender."""

    SLASHED = 1  # signed a wrong output: the evidence (in EVIDENCE chunks) proves it
    SILENT = 2  # took work and never answered: banned until `until_ms` (no evidence)


EVIDENCE_CHUNK_BYTES = 7 * 1024  # evidence bytes per record: a value stays under 8 KiB
MAX_EVIDENCE_CHUNKS = 600  # 4.1 MiB: the largest evidence (`protocol.trust`) fits


@wire_struct
@dataclass(frozen=True)
class VerdictRecord:
    """The owner checked `offender` guilty (or found it silent). Nodes that recompute the
    evidence themselves leave the offender out of their plans; the record alone proves
    nothing."""

    offender: Annotated[bytes, Fixed(20)]
    session: Annotated[bytes, Fixed(16)]  # the disputed session: its credits are forfeit
    kind: Annotated[VerdictKind, EnumOf(VerdictKind)]
    digest: Annotated[bytes, Fixed(32)]  # evidence_digest (zeros for SILENT)
    chunks: Annotated[int, UInt(2)]  # EVIDENCE records holding it (0 for SILENT)
    until_ms: Annotated[int, UInt(8)]  # SILENT: the ban's end, unix ms (0 for SLASHED)
    reason: Annotated[str, Text(128)]

    def __post_init__(self) -> None:
        if self.kind is VerdictKind.SLASHED and not 0 < self.chunks <= MAX_EVIDENCE_CHUNKS:
            raise ValueError(f"a slashing names 1..{MAX_EVIDENCE_CHUNKS} evidence chunks, "
                             f"got {self.chunks}")


@wire_struct
@dataclass(frozen=True)
class EvidenceChunkRecord:
    """Chunk `index` of `count` of the evidence whose digest is `digest`."""

    digest: Annotated[bytes, Fixed(32)]
    index: Annotated[int, UInt(2)]
    count: Annotated[int, UInt(2)]
    data: Annotated[bytes, Blob(EVIDENCE_CHUNK_BYTES)]

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count <= MAX_EVIDENCE_CHUNKS or not self.data:
            raise ValueError(f"evidence chunk {self.index} of {self.count} is out of range")


VALUE_TYPES: dict[RecordKind, type[Any]] = {
    RecordKind.HEALTH: HealthRecord,
    RecordKind.ROLES: RolesRecord,
    RecordKind.REACH: ReachRecord,
    RecordKind.LAYER_SPAN: LayerSpanRecord,
    RecordKind.LINKS: LinksRecord,
    RecordKind.SERVING: ServingRecord,
    RecordKind.VERDICT: VerdictRecord,
    RecordKind.EVIDENCE: EvidenceChunkRecord,
}
KIND_OF: dict[type[Any], RecordKind] = {v: k for k, v in VALUE_TYPES.items()}


def node_key(node_id: bytes, kind: RecordKind) -> bytes:
    """Key of a per-node record (health, roles, reach)."""
    return key_of(f"cadencia/node/{kind.name.lower()}/{node_id.hex()}")


def layer_key(model: str, layer: int) -> bytes:
    """Key under which every server of `layer` of `model` publishes its span."""
    return key_of(f"cadencia/layer/{model}/{layer}")


def verdict_key(offender: bytes) -> bytes:
    """Key under which every node publishes its verdicts against `offender`."""
    return key_of(f"cadencia/verdict/{offender.hex()}")


def evidence_key(digest: bytes, index: int) -> bytes:
    """Key of chunk `index` of the evidence named `digest`."""
    return key_of(f"cadencia/evidence/{digest.hex()}/{index}")


def keys_for(value: Any, owner_id: bytes) -> list[bytes]:
    """Every key a value of this type belongs under."""
    if isinstance(value, LayerSpanRecord):
        return [layer_key(value.model, i) for i in range(value.start, value.end)]
    if isinstance(value, VerdictRecord):
        return [verdict_key(value.offender)]
    if isinstance(value, EvidenceChunkRecord):
        return [evidence_key(value.digest, value.index)]
    return [node_key(owner_id, KIND_OF[type(value)])]


def signing_bytes(record: SignedRecord) -> bytes:
    """What the owner signs: every field but the signature, domain-separated."""
    return _DOMAIN + encode_struct(replace(record, signature=bytes(64)))


def make_record(
    identity: Identity, key: bytes, value: Any, *, seq: int, ttl_s: float, now_s: float
) -> SignedRecord:
    """Sign `value` under `key`, valid for `ttl_s` from `now_s` (unix seconds)."""
    kind = KIND_OF.get(type(value))
    if kind is None:
        raise RecordError(f"{type(value).__name__} is not a record value type")
    if not 0 < ttl_s <= MAX_TTL_S:
        raise RecordError(f"ttl {ttl_s} s is outside (0, {MAX_TTL_S}]")
    raw = encode_struct(value)
    if len(raw) > MAX_RECORD_VALUE_BYTES:
        raise RecordError(f"value of {len(raw)} bytes exceeds {MAX_RECORD_VALUE_BYTES}")
    unsigned = SignedRecord(key, int(kind), identity.public_key, seq,
                            int((now_s + ttl_s) * 1000), raw, bytes(64))
    return replace(unsigned, signature=identity.sign(signing_bytes(unsigned)))


def owner_of(record: SignedRecord) -> bytes:
    return node_id_of(record.owner_key)


def decode_value(record: SignedRecord) -> Any:
    """The typed value inside a record (does not check the signature: see `verify_record`)."""
    try:
        cls = VALUE_TYPES[RecordKind(record.kind)]
    except ValueError:
        raise RecordError(f"unknown record kind {record.kind}") from None
    try:
        return decode_struct(record.value, cls)
    except ProtocolError as exc:
        raise RecordError(f"malformed {cls.__name__}: {exc}") from exc


def verify_record(record: SignedRecord, now_s: float) -> Any:
    """The typed value if `record` is authentic, live and stored under its right key.

    Raises RecordError (forged signature, expired, expiry beyond MAX_TTL_S, wrong key).
    """
    try:
        verify(record.owner_key, signing_bytes(record), record.signature)
    except IdentityError as exc:
        raise RecordError(f"forged record: {exc}") from exc
    now_ms = now_s * 1000
    if record.expires_at_ms <= now_ms:
        raise RecordError("record expired")
    if record.expires_at_ms > now_ms + (MAX_TTL_S + CLOCK_SKEW_S) * 1000:
        raise RecordError("record expiry is too far in the future")
    value = decode_value(record)
    if record.key not in keys_for(value, owner_of(record)):
        raise RecordError("record is stored under a key its value does not belong to")
    return value


def is_authentic(record: SignedRecord, now_s: float) -> bool:
    """Boolean form of `verify_record` that logs refusals."""
    try:
        verify_record(record, now_s)
    except RecordError as exc:
        log.warning("dropped record from %s: %s", owner_of(record).hex()[:12], exc)
        return False
    return True

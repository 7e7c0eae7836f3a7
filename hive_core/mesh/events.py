"""Events the node runtime emits: links opening and closing, frames refused, records published."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PeerConnected:
    """An authenticated link to a peer opened."""

    node_id: bytes  # the peer's proven id
    kind: str  # "rtc" or "ws"


@dataclass(frozen=True)
class PeerLost:
    """A link closed: orderly, failed, or declared dead after missing pings."""

    node_id: bytes
    kind: str
    reason: str  # "closed", "dead: no answer for 8.0 s", "replaced", ...


@dataclass(frozen=True)
class FrameRejected:
    """A frame or handshake from a peer was refused; the node keeps serving."""

    node_id: bytes  # the peer's id, or b"" when it never proved one
    reason: str  # the ProtocolError/HandshakeError text


@dataclass(frozen=True)
class RecordsPublished:
    """This node signed and stored its records in the DHT."""

    kinds: tuple[str, ...]  # record kind names, e.g. ("HEALTH", "ROLES")
    stored: int  # how many (record, replica) stores were accepted


NodeEvent = PeerConnected | PeerLost | FrameRejected | RecordsPublished

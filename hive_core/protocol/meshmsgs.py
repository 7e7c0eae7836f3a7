"""Mesh runtime messages (tags 0x30-0x3F): the hive's signed status records, and the STUN and
TURN servers a sentinel offers the nodes it admits."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated

from hive_core.base.codec import Nested, message, wire_struct
from hive_core.base.errors import ProtocolError
from hive_core.base.fields import ListOf, Text, UInt
from hive_core.protocol.messages import SignedRecord

MAX_STATUS_RECORDS = 512  # 128 nodes x (health, roles, reach, links); the frame limit still applies
MAX_STATUS_NODES = 128  # nodes a status reply covers


class MeshMsgType(IntEnum):
    """Tags of the mesh runtime's own messages (the 0x30-0x3F range of `MsgType`)."""

    STATUS_REQUEST = 0x30
    STATUS_REPLY = 0x31
    ICE_QUERY = 0x32
    ICE_SERVERS = 0x33

MAX_ICE_SERVERS = 4


@message(MeshMsgType.STATUS_REQUEST)
@dataclass(frozen=True)
class StatusRequest:
    """Ask a node (usually a sentinel) for the records of every node it knows of."""

    rpc_id: Annotated[int, UInt(8)]


@message(MeshMsgType.STATUS_REPLY)
@dataclass(frozen=True)
class StatusReply:
    """The owners' signed records, passed on unchanged so the asker verifies each one."""

    rpc_id: Annotated[int, UInt(8)]
    records: Annotated[
        tuple[SignedRecord, ...], ListOf(Nested(SignedRecord), MAX_STATUS_RECORDS)
    ]


@wire_struct
@dataclass(frozen=True)
class IceServerEntry:
    """One STUN (``stun:HOST:PORT``) or TURN (``turn:HOST:PORT`` with a login) server."""

    url: Annotated[str, Text(128)]
    username: Annotated[str, Text(128)]  # TURN only; "" for STUN
    credential: Annotated[str, Text(128)]  # TURN only
    expires_at: Annotated[int, UInt(8)]  # unix seconds the login stops working; 0: never

    def __post_init__(self) -> None:
        if not self.url.startswith(("stun:", "turn:")):
            raise ProtocolError(f"ICE server URL must be stun: or turn:, got {self.url[:40]!r}")


@message(MeshMsgType.ICE_QUERY)
@dataclass(frozen=True)
class IceQuery:
    """Node -> the entry it joined through: which STUN and TURN servers should I gather with?"""

    rpc_id: Annotated[int, UInt(8)]


@message(MeshMsgType.ICE_SERVERS)
@dataclass(frozen=True)
class IceServers:
    """Reply to an IceQuery: gather server-reflexive and relay candidates with these (a TURN
    login is made for the asking node's id and expires on its own)."""

    rpc_id: Annotated[int, UInt(8)]
    servers: Annotated[tuple[IceServerEntry, ...], ListOf(Nested(IceServerEntry), MAX_ICE_SERVERS)]

"""Mesh runtime messages (tags 0x30-0x3F): asking a node for the hive's signed status records."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated

from hive_core.base.codec import Nested, message
from hive_core.base.fields import ListOf, UInt
from hive_core.protocol.messages import SignedRecord

MAX_STATUS_RECORDS = 512  # 128 nodes x (health, roles, reach, links); the frame limit still applies
MAX_STATUS_NODES = 128  # nodes a status reply covers


class MeshMsgType(IntEnum):
    """Tags of the mesh runtime's own messages (the 0x30-0x3F range of `MsgType`)."""

    STATUS_REQUEST = 0x30
    STATUS_REPLY = 0x31


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

"""Tunnel messages (tags 0x34-0x37 of the mesh runtime range): an asker's link to a node
carried through one relay peer, so the node never sees the asker's own link or key.

The asker opens a circuit at the relay naming the target and a throwaway public key; the
relay opens a circuit of its own to the target and, once the target accepts, pairs the two.
Frames then go asker -> relay -> target and back, each one sealed end to end between the
throwaway key and the target's key (`hive_core.exec.relay`): the relay forwards bytes it
can neither read nor change unseen. Circuit ids are per hop: the relay rewrites them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated

from hive_core.base.codec import MAX_FRAME_BYTES, message
from hive_core.base.errors import ProtocolError
from hive_core.base.fields import Blob, EnumOf, Fixed, Text, UInt
from hive_core.base.ids import ID_BYTES
from hive_core.protocol.messages import ErrorCode

CIRCUIT_BYTES = 16
NONCE_BYTES = 16
KEY_BYTES = 32  # an Ed25519 public key
MAX_REASON = 200
# A sealed frame carries a whole inner frame (at most MAX_FRAME_BYTES - 4096 for a stage
# request) plus the seal's overhead; this leaves the tunnel header room inside one frame.
MAX_SEALED = MAX_FRAME_BYTES - 64


class TunnelMsgType(IntEnum):
    """Tags of the tunnel messages."""

    TUNNEL_OPEN = 0x34
    TUNNEL_OPENED = 0x35
    TUNNEL_FRAME = 0x36
    TUNNEL_CLOSE = 0x37


@message(TunnelMsgType.TUNNEL_OPEN)
@dataclass(frozen=True)
class TunnelOpen:
    """Open a circuit to `target` for the holder of `opener_key` (answered by TunnelOpened).

    Sent by an asker to a relay, then by the relay to the target with a circuit id of its
    own; `nonce` (the opener's, passed on unchanged) binds every sealed frame to this tunnel.
    """

    rpc_id: Annotated[int, UInt(8)]
    circuit: Annotated[bytes, Fixed(CIRCUIT_BYTES)]  # the sender's id for this circuit
    target: Annotated[bytes, Fixed(ID_BYTES)]  # node id of the tunnel's far end
    opener_key: Annotated[bytes, Fixed(KEY_BYTES)]  # the asker's throwaway key, never its own
    nonce: Annotated[bytes, Fixed(NONCE_BYTES)]

    def __post_init__(self) -> None:
        if self.opener_key == bytes(KEY_BYTES):
            raise ProtocolError("a tunnel needs the opener's public key")


@message(TunnelMsgType.TUNNEL_OPENED)
@dataclass(frozen=True)
class TunnelOpened:
    """The answer to TunnelOpen: OK with the target's public key, or why not."""

    rpc_id: Annotated[int, UInt(8)]
    code: Annotated[ErrorCode, EnumOf(ErrorCode, 2)]
    error: Annotated[str, Text(MAX_REASON)]  # for people; empty when ok
    target_key: Annotated[bytes, Fixed(KEY_BYTES)]  # zeros when refused

    @property
    def ok(self) -> bool:
        return self.code is ErrorCode.OK


@message(TunnelMsgType.TUNNEL_FRAME)
@dataclass(frozen=True)
class TunnelFrame:
    """One sealed inner frame on a circuit, in either direction."""

    circuit: Annotated[bytes, Fixed(CIRCUIT_BYTES)]  # the receiver's id for this circuit
    sealed: Annotated[bytes, Blob(MAX_SEALED)]


@message(TunnelMsgType.TUNNEL_CLOSE)
@dataclass(frozen=True)
class TunnelClose:
    """The circuit is gone (closed by an end, its other hop lost, or a frame was refused)."""

    circuit: Annotated[bytes, Fixed(CIRCUIT_BYTES)]
    reason: Annotated[str, Text(MAX_REASON)]

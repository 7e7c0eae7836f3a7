"""Wire protocol: frozen dataclass messages tagged by an IntEnum, and a pure binary codec.

A frame is ``version (u8) | tag (u8) | fields``. Fields are little-endian, written in
declaration order by the spec in each field's ``Annotated[...]`` hint (`UInt`, `Float`,
`Bool`, `Blob`/`Fixed`, `Text`, `EnumOf`, `ListOf`, `Maybe`, `Nested`). Every length and
count has a limit and a frame is at most `MAX_FRAME_BYTES` (aiortc's 256 KiB message).
`decode` raises `ProtocolError` (a ValueError) and nothing else on malformed input.

Adding messages (later issues do this for inference, trust, economy, world sync):
define an IntEnum for your family using a reserved range (see `MsgType`: 0x30-0x3F mesh
runtime, 0x40-0x7F exec, 0x80-0x9F trust, 0xA0-0xBF economy, 0xC0-0xDF world), then::

    from typing import Annotated
    from dataclasses import dataclass
    from hive_core.protocol import message, UInt, Text

    class ExecMsgType(IntEnum):
        RUN_LAYERS = 0x40

    @message(ExecMsgType.RUN_LAYERS)
    @dataclass(frozen=True)
    class RunLayers:
        rpc_id: Annotated[int, UInt(8)]
        model: Annotated[str, Text(128)]

The class is registered when its module is imported; after that `encode`/`decode`
handle it like the core messages. A `__post_init__` raising ValueError makes `decode`
refuse the frame with ProtocolError. Nested structs use `@wire_struct` and `Nested(cls)`.
"""

from hive_core.base.codec import (
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    Nested,
    decode,
    decode_struct,
    encode,
    encode_struct,
    message,
    registered_messages,
    wire_struct,
)
from hive_core.base.errors import ProtocolError
from hive_core.base.fields import (
    Blob,
    Bool,
    EnumOf,
    Field,
    Fixed,
    Float,
    Int,
    ListOf,
    Maybe,
    Text,
    UInt,
)
from hive_core.base.ids import ID_BYTES
from hive_core.protocol import feed, inference, trust, tunnel  # noqa: F401 - every node knows every message
from hive_core.protocol.handshake import (
    HandshakeError,
    ReplayedHello,
    ReplayGuard,
    make_hello,
    make_signal,
    relayed,
    verify_hello,
    verify_signal,
)
from hive_core.protocol.meshmsgs import (
    MAX_STATUS_NODES,
    MAX_STATUS_RECORDS,
    IceQuery,
    IceServers,
    MeshMsgType,
    StatusReply,
    StatusRequest,
)
from hive_core.protocol.messages import (
    MAX_CONTACTS,
    MAX_RECORD_VALUE_BYTES,
    MAX_RECORDS,
    Bye,
    Contact,
    Error,
    ErrorCode,
    FindNode,
    FindValue,
    Hello,
    MsgType,
    Nodes,
    Ping,
    Pong,
    Signal,
    SignalKind,
    SignedRecord,
    Store,
    Stored,
    Value,
)
from hive_core.protocol.tensor import (
    MAX_CHUNK_PAYLOAD,
    SAFE_CHUNK_PAYLOAD,
    Dtype,
    Reassembler,
    TensorChunk,
    WireTensor,
    chunk_tensor,
)

# Messages that ask for a reply (by `rpc_id`): a node that does not serve one answers
# `Error(rpc_id, UNSUPPORTED)` at once rather than leaving the asker to time out.
REQUESTS: tuple[type, ...] = (Ping, FindNode, FindValue, Store, StatusRequest, IceQuery,
                              inference.RunStage, inference.ShardQuery, feed.FeedSubscribe,
                              tunnel.TunnelOpen)

__all__ = [
    "ID_BYTES",
    "MAX_CHUNK_PAYLOAD",
    "MAX_CONTACTS",
    "MAX_FRAME_BYTES",
    "MAX_RECORDS",
    "MAX_RECORD_VALUE_BYTES",
    "MAX_STATUS_NODES",
    "MAX_STATUS_RECORDS",
    "PROTOCOL_VERSION",
    "REQUESTS",
    "SAFE_CHUNK_PAYLOAD",
    "Blob",
    "Bool",
    "Bye",
    "Contact",
    "Dtype",
    "EnumOf",
    "Error",
    "ErrorCode",
    "Field",
    "FindNode",
    "FindValue",
    "Fixed",
    "Float",
    "HandshakeError",
    "Hello",
    "IceQuery",
    "IceServers",
    "Int",
    "ListOf",
    "Maybe",
    "MeshMsgType",
    "MsgType",
    "Nested",
    "Nodes",
    "Ping",
    "Pong",
    "ProtocolError",
    "Reassembler",
    "ReplayGuard",
    "ReplayedHello",
    "Signal",
    "SignalKind",
    "SignedRecord",
    "StatusReply",
    "StatusRequest",
    "Store",
    "Stored",
    "TensorChunk",
    "Text",
    "UInt",
    "Value",
    "WireTensor",
    "chunk_tensor",
    "decode",
    "decode_struct",
    "encode",
    "encode_struct",
    "make_hello",
    "make_signal",
    "message",
    "registered_messages",
    "relayed",
    "verify_hello",
    "verify_signal",
    "wire_struct",
]

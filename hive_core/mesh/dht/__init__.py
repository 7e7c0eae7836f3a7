"""Kademlia-style DHT: XOR-distance k-buckets, iterative lookups, signed records with TTL.

The DHT is transport-agnostic: it calls an `RpcTransport` (``async (contact, request)
-> reply``) and answers peers through `DhtNode.handle(sender, request)`. The node
runtime wires both over aiortc; `RpcEndpoint`/`ChannelRpc` do it over any `Channel`;
the simulator does it in-process with a latency model.
"""

from hive_core.mesh.dht.config import DhtConfig
from hive_core.mesh.dht.distance import bucket_index, key_of, xor_distance
from hive_core.mesh.dht.lookup import LookupResult
from hive_core.mesh.dht.node import DhtNode
from hive_core.mesh.dht.records import (
    LayerSpanRecord,
    LinkRtt,
    LinksRecord,
    ReachRecord,
    RecordError,
    RecordKind,
    Role,
    RolesRecord,
    decode_value,
    layer_key,
    make_record,
    node_key,
    owner_of,
    verify_record,
)
from hive_core.mesh.dht.routing import RoutingTable
from hive_core.mesh.dht.rpc import ChannelRpc, RpcEndpoint, RpcError, RpcTransport, next_rpc_id
from hive_core.mesh.dht.storage import RecordStore

__all__ = [
    "ChannelRpc", "DhtConfig", "DhtNode", "LayerSpanRecord", "LinkRtt", "LinksRecord", "LookupResult",
    "ReachRecord", "RecordError", "RecordKind", "RecordStore", "Role", "RolesRecord",
    "RoutingTable", "RpcEndpoint", "RpcError", "RpcTransport", "bucket_index", "decode_value",
    "key_of", "layer_key", "make_record", "next_rpc_id", "node_key", "owner_of",
    "verify_record", "xor_distance",
]

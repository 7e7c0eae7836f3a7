"""The mesh: identities, channels (aiortc and in-memory), signaling and the DHT.

Start a peer with ``HiveNode(identity, NodeConfig(join=("ws://127.0.0.1:7700",),
rtc=RTCOptions.loopback()))`` and ``await hive.start()``; the layers above use its
``hive.node`` (a `Node`): ``request``, ``send_tensor``, ``on``, ``on_tensor``,
``open_channel``, ``events()``.

Names are re-exported lazily: `hive_core.protocol` imports `hive_core.base.identity`,
so importing the runtime here eagerly would be circular.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ConnectFailed": "rtc", "FrameRejected": "events", "HiveNode": "hivenode",
    "Identity": "identity", "JoinFailed": "joining", "Node": "node", "NodeConfig": "node",
    "NodeEvent": "events", "PeerConnected": "events", "PeerInfo": "peers", "PeerLost": "events",
    "PeerUnavailable": "node", "RTCOptions": "rtc", "RecordsPublished": "events",
    "StatusFailed": "status", "fetch_status": "status", "status_view": "status",
}
__all__ = [
    "ConnectFailed",
    "FrameRejected",
    "HiveNode",
    "Identity",
    "JoinFailed",
    "Node",
    "NodeConfig",
    "NodeEvent",
    "PeerConnected",
    "PeerInfo",
    "PeerLost",
    "PeerUnavailable",
    "RTCOptions",
    "RecordsPublished",
    "StatusFailed",
    "fetch_status",
    "status_view",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hive_core.mesh' has no attribute {name!r}")
    return getattr(importlib.import_module(f"hive_core.mesh.{module}"), name)

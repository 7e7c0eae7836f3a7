"""Distributed execution: shard servers, the asker's pipeline client, redundant dispatch with
verification and slashing, failover, speculative decoding, and an in-process hive.

Names are imported on first use, so `cadencia node --help` (which imports `exec.serve`)
does not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "ClientConfig": "client", "HiveClient": "client", "HiveSession": "client",
    "ExecError": "errors", "FaultSpecError": "errors", "NoReplicaError": "errors",
    "VerificationError": "errors", "Fault": "faults", "FaultKind": "faults",
    "SpecStats": "generate", "generate_hive": "generate", "prompt_lookup": "generate",
    "ServerConfig": "server", "ShardServer": "server",
}

__all__ = [
    "ClientConfig", "ExecError", "Fault", "FaultKind", "FaultSpecError", "HiveClient",
    "HiveSession", "NoReplicaError", "ServerConfig", "ShardServer", "SpecStats",
    "VerificationError", "generate_hive", "prompt_lookup",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)

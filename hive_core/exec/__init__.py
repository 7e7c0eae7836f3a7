"""Distributed execution: shard servers, the asker's pipeline client, redundant dispatch with
verification and slashing, failover, speculative decoding, and an in-process hive."""

from hive_core.exec.client import ClientConfig, HiveClient, HiveSession
from hive_core.exec.errors import ExecError, FaultSpecError, NoReplicaError, VerificationError
from hive_core.exec.faults import Fault, FaultKind
from hive_core.exec.generate import SpecStats, generate_hive, prompt_lookup
from hive_core.exec.server import ServerConfig, ShardServer

__all__ = [
    "ClientConfig",
    "ExecError",
    "Fault",
    "FaultKind",
    "FaultSpecError",
    "HiveClient",
    "HiveSession",
    "NoReplicaError",
    "ServerConfig",
    "ShardServer",
    "SpecStats",
    "VerificationError",
    "generate_hive",
    "prompt_lookup",
]

"""Game mechanics: hive events turned into what the 3D view draws (no panda3d here)."""

from .errors import GameError, GameEventError
from .events import (
    EventKind,
    GameEvent,
    HealthUpdated,
    HopSent,
    NodeLeft,
    ReceiptIssued,
    ReplicaAnswered,
    Slashed,
    StageStarted,
    Verified,
)

__all__ = [
    "EventKind",
    "GameError",
    "GameEvent",
    "GameEventError",
    "HealthUpdated",
    "HopSent",
    "NodeLeft",
    "ReceiptIssued",
    "ReplicaAnswered",
    "Slashed",
    "StageStarted",
    "Verified",
]

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
from .rules import MC_PER_FLOOR
from .snapshot import DistrictSnapshot, GameSnapshot, PulseSnapshot, TowerSnapshot, TrialStatus
from .state import GameState

__all__ = [
    "MC_PER_FLOOR",
    "DistrictSnapshot",
    "EventKind",
    "GameError",
    "GameEvent",
    "GameEventError",
    "GameSnapshot",
    "GameState",
    "HealthUpdated",
    "HopSent",
    "NodeLeft",
    "PulseSnapshot",
    "ReceiptIssued",
    "ReplicaAnswered",
    "Slashed",
    "StageStarted",
    "TowerSnapshot",
    "TrialStatus",
    "Verified",
]

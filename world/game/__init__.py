"""Game mechanics: hive events (`hive_core.events`) turned into what the 3D view draws
(no panda3d here)."""

from .errors import GameError, GameEventError
from .rules import MC_PER_FLOOR
from .snapshot import (
    DistrictSnapshot,
    FlowSnapshot,
    GameSnapshot,
    PulseSnapshot,
    SessionSnapshot,
    TowerSnapshot,
    TrialStatus,
    WorkSnapshot,
)
from .state import GameState

__all__ = [
    "MC_PER_FLOOR",
    "DistrictSnapshot",
    "FlowSnapshot",
    "GameError",
    "GameEventError",
    "GameSnapshot",
    "GameState",
    "PulseSnapshot",
    "SessionSnapshot",
    "TowerSnapshot",
    "TrialStatus",
    "WorkSnapshot",
]

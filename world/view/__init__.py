"""The Accordion World client (the only package that imports panda3d): scene, HUD, modes, editor.

Importing this package does not import panda3d; `WorldApp` and `Scene` load it when used.
"""

from .camera import CameraState, framing, orbit, track
from .city_view import CityView
from .config import ViewConfig, apply_config, has_display
from .editor import Cell, Editor, cell_at
from .frame import (
    BuildingView,
    DistrictView,
    EditableCity,
    EditRefused,
    HudView,
    PlotView,
    PulseView,
    RoadView,
    TowerView,
    ViewError,
    WorldFrame,
    WorldSource,
)

__all__ = [
    "BuildingView",
    "CameraState",
    "Cell",
    "CityView",
    "DistrictView",
    "EditRefused",
    "EditableCity",
    "Editor",
    "HudView",
    "PlotView",
    "PulseView",
    "RoadView",
    "TowerView",
    "ViewConfig",
    "ViewError",
    "WorldFrame",
    "WorldSource",
    "apply_config",
    "cell_at",
    "framing",
    "has_display",
    "orbit",
    "track",
]

"""What the view draws: frozen snapshots of the hive and the city, and the interfaces it reads.

The scene is a pure function of a `WorldFrame`; nothing the model does not hold is kept
on scene nodes. Sources of frames (the game state, a spectated hive, the bench) and the
editable city are `typing.Protocol`s so the view runs, and is tested, on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

HOT_C = 80.0  # degrees C from which a district is marked hot
LOW_BATTERY = 0.3  # on battery below this fraction, a district is marked


class ViewError(ValueError):
    """A problem with what the view was asked to show or do."""


class EditRefused(ViewError):
    """The city refused an edit (someone else's plot, an occupied cell, off the plot)."""


@dataclass(frozen=True)
class DistrictView:
    """One hive node as a district of the city."""

    node_id: str
    x: float  # map position in milliseconds (MDS of RTTs): close means a fast link
    y: float
    tflops: float = 1.0  # measured compute; sets the district's footprint and height
    battery: float = 1.0  # 0..1; a draining battery lowers the lights
    efficiency: float = 1.0  # 0..1; an overheating device dims as this drops
    fall: float = 0.0  # 0 standing .. 1 fallen: a slashed node's district sinks and tilts
    active: bool = False  # runs the stage in flight right now
    online: bool = True  # False once the node left: the district goes dark
    floors: float = 0.0  # floors its verified work receipts paid for (animated as they rise)
    name: str = ""  # a short name for its label ("" : drawn without one)
    role: str = ""  # what it is to this player: "asker", "you", "referee" or ""
    layers: tuple[tuple[int, int], ...] = ()  # layer spans [start, end) it serves: its floors
    part: str = "full"  # "full" blocks stack as floors; "attention" / "mlp" halves are factories
    n_layers: int = 0  # the model's depth (0: unknown)
    step_ms: float = 0.0  # median time it takes to answer a request (0: none yet)
    queued: int = 0  # requests waiting at it (reported by live feeds)
    congestion: float = 0.0  # 0..1: how much slower than the hive's median; crates pile up
    slowest: bool = False  # the slowest working node of the hive
    temperature_c: float | None = None  # None: no sensor reported
    on_ac: bool = True
    evidence: str = ""  # a slashed node: what it was caught at (with signed evidence or not)
    tokens: int = 0  # tokens it pushed through its stages (verified receipts)

    @property
    def hot(self) -> bool:
        """Running hot enough to throttle (the economy's efficiency drops from here)."""
        return self.temperature_c is not None and self.temperature_c >= HOT_C

    @property
    def low_battery(self) -> bool:
        return not self.on_ac and self.battery < LOW_BATTERY

    def layer_text(self) -> str:
        """'L0-14' (inclusive), several spans joined by commas; '' when it serves none."""
        return ",".join(f"L{a}-{b - 1}" for a, b in self.layers)


@dataclass(frozen=True)
class RoadView:
    """A measured link between two districts."""

    a: str
    b: str
    rtt_ms: float
    rate_ab: float = 0.0  # tensor hops per second sent from a to b (each comes back: b to a)
    rate_ba: float = 0.0  # and from b to a


@dataclass(frozen=True)
class PulseView:
    """A tensor in flight from one district to the next, over `duration` seconds from `start`."""

    src: str
    dst: str
    start: float  # clock time the hop was sent
    duration: float  # the measured hop time, in seconds


@dataclass(frozen=True)
class TowerView:
    """The Merkle tower of a consensus trial beside a district: one floor per replica answer."""

    node_id: str
    answers: int  # replica answers received so far
    needed: int  # answers that make the quorum
    verified: bool = False  # all floors light up when the roots agree
    agreeing: int = 0  # answers in the largest agreeing group (the rest are drawn red)


@dataclass(frozen=True)
class PlotView:
    """A player's rectangle of grid cells; only its owner may build there."""

    plot_id: str
    owner: str
    x: float  # world position of cell (0, 0)'s corner, in map milliseconds
    y: float
    width: int  # cells along x
    depth: int  # cells along y
    cell: float = 1.0  # cell size in map milliseconds


@dataclass(frozen=True)
class BuildingView:
    """A building on a plot cell, turned by quarter turns, as tall as the credits spent on it."""

    building_id: str
    plot_id: str
    i: int
    j: int
    rotation: int = 0  # quarter turns, 0..3
    kind: str = "tower"
    height: float = 1.0  # in cells


@dataclass(frozen=True)
class HudView:
    """The status panel's facts, as text-ready values."""

    sharding: str = "-"  # layers per node and alpha/beta roles
    routing: str = "-"  # mesh size and local RTT
    kv_cache: str = "-"  # INT4 and bandwidth saved
    consensus: str = "-"  # Merkle status and byzantine count
    tokens_per_s: float = 0.0
    answer: str = ""  # the answer streaming in
    credits_mc: int = 0  # the player's balance, milli-credits (verified work receipts)
    player: str = ""
    asker: str = ""  # the name of the district asking the answer in flight
    verified_steps: int = 0  # stage steps whose replicas agreed, since the game started
    slashed: int = 0  # nodes slashed on evidence
    notices: tuple[str, ...] = ()  # recent outcomes of the player's choices and achievements
    refused: str = ""  # the last refused choice, with its reason ("" : none)
    activity: tuple[str, ...] = ()  # every player's latest choices, from the city doc


@dataclass(frozen=True)
class WorldFrame:
    """Everything drawn in one frame; the scene renders exactly this."""

    districts: tuple[DistrictView, ...] = ()
    roads: tuple[RoadView, ...] = ()
    pulses: tuple[PulseView, ...] = ()
    towers: tuple[TowerView, ...] = ()
    plots: tuple[PlotView, ...] = ()
    buildings: tuple[BuildingView, ...] = ()
    hud: HudView = field(default_factory=HudView)

    def district(self, node_id: str) -> DistrictView:
        for d in self.districts:
            if d.node_id == node_id:
                return d
        raise ViewError(f"no district for node {node_id!r}")


class WorldSource(Protocol):
    """Anything that can say what the world looks like at clock time `now`."""

    def frame(self, now: float) -> WorldFrame: ...


class ComputeGate(Protocol):
    """What the app holds while a frame renders, so hosted compute waits between frames."""

    def holding(self) -> AbstractContextManager[None]: ...


class EditableCity(Protocol):
    """The city doc as the editor needs it; refusals raise `ValueError` subclasses."""

    def plots(self) -> Sequence[PlotView]: ...

    def buildings(self) -> Sequence[BuildingView]: ...

    def place(self, player: str, plot_id: str, i: int, j: int, rotation: int, kind: str) -> str: ...

    def move(self, player: str, building_id: str, i: int, j: int) -> None: ...

    def rotate(self, player: str, building_id: str, rotation: int) -> None: ...

    def remove(self, player: str, building_id: str) -> None: ...

    def undo(self, player: str) -> bool: ...

    def redo(self, player: str) -> bool: ...

"""What the 3D view draws at one instant: frozen, self-contained views of the game state.

Everything here is derived by `GameState.snapshot(now)`; the view reads it and keeps no
game state of its own. Positions are map milliseconds from `world.layout` (close on the
map means a fast link); a node the map has not placed yet has `position=None`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hive_core.base.stage import Part

Position = tuple[float, ...]


class TrialStatus(enum.Enum):
    """Where a consensus trial stands."""

    OPEN = "open"  # answers are coming in
    VERIFIED = "verified"  # the trust layer accepted agreeing answers
    EXPIRED = "expired"  # no verdict came in time (answers never converged)


@dataclass(frozen=True)
class DistrictSnapshot:
    """One hive node as a district of the city."""

    node_id: bytes
    position: Position | None  # map ms; None until the map places the node
    online: bool  # False once the node left the hive: the district goes dark
    active: bool  # worked on a stage, a hop or an answer in the last moments
    efficiency: float  # 0.12..1, from heat and battery: the district's light level
    battery: float | None  # 0..1; None for a device without a battery
    on_ac: bool
    credits_mc: int  # earned from verified work receipts, in milli-credits
    floors: int  # building floors those credits paid for
    building_height: float  # floors, animated: rises towards `floors` after a receipt
    fallen: bool  # slashed: the district falls and stays down
    fall_progress: float  # 0..1 over the fall animation; 0 when standing
    slash_reason: str  # why it fell ("" when standing)
    temperature_c: float | None = None  # from its latest health report; None if unreported
    slash_step: int | None = None  # the decode step it lied at (None when standing)
    slash_proven: bool = False  # the slashing carried signed evidence (checked here)


@dataclass(frozen=True)
class PulseSnapshot:
    """A tensor in flight along a link."""

    session_id: bytes
    from_node: bytes
    to_node: bytes
    sent_at: float
    hop_time_s: float  # the measured hop time: the pulse's travel time
    nbytes: int
    progress: float  # 0 at the sender, 1 on arrival
    position: Position | None  # interpolated between the two districts; None if unplaced


@dataclass(frozen=True)
class TowerSnapshot:
    """A consensus trial as a tower: one floor per answer, lit as answers agree."""

    session_id: bytes
    step: int
    nodes: tuple[bytes, ...]  # replicas that answered, in order of arrival
    answers: int
    agreeing: int  # size of the largest group of equal answers
    groups: int  # how many different answers came back (1 = all agree so far)
    quorum: int  # agreeing answers needed
    convergence: float  # agreeing / quorum, capped at 1
    status: TrialStatus
    slashed: tuple[bytes, ...]  # replicas slashed in this trial
    anchor: Position | None  # where to draw it: beside the first replica's district
    resolved_at: float | None  # when the verdict (or the timeout) came


@dataclass(frozen=True)
class WorkSnapshot:
    """What one node serves and how fast (see `world.game.traffic`)."""

    node_id: bytes
    spans: tuple[tuple[int, int, Part], ...]  # layer spans [start, end) and part it served
    step_ms: float | None  # median time to answer one request; None before the first
    answered: int  # requests answered
    queued: int  # requests taken and not answered yet (reported by live feeds)
    tokens: int  # tokens pushed through its stages, from verified receipts
    verified: int  # trials in which its answer was accepted


@dataclass(frozen=True)
class FlowSnapshot:
    """Tensor traffic on one directed link: the asker (or previous stage) to a worker."""

    src: bytes
    dst: bytes
    rate_hz: float  # hops per second over the last few seconds (each goes out and back)


@dataclass(frozen=True)
class SessionSnapshot:
    """One answer being generated somewhere in the hive."""

    session_id: bytes
    asker: bytes | None  # the node its hops come from
    steps: int  # decode steps seen after the prompt's (one per generated token)
    tokens_per_s: float  # decode steps per second
    verified: int  # its stage steps whose replicas agreed
    started_at: float
    last_at: float


@dataclass(frozen=True)
class GameSnapshot:
    """Everything the view draws at clock time `now`."""

    now: float
    districts: tuple[DistrictSnapshot, ...]  # sorted by node id
    pulses: tuple[PulseSnapshot, ...]  # in order of sending
    towers: tuple[TowerSnapshot, ...]  # in order of the first answer
    total_credits_mc: int
    verified_trials: int  # since the game started
    slashings: int
    work: tuple[WorkSnapshot, ...] = ()  # by node id
    flows: tuple[FlowSnapshot, ...] = ()  # by link
    sessions: tuple[SessionSnapshot, ...] = ()  # oldest first
    n_layers: int = 0  # the model's depth, as far as stages reported it

    def district(self, node_id: bytes) -> DistrictSnapshot:
        """The district of `node_id` (KeyError if the game never heard of it)."""
        for d in self.districts:
            if d.node_id == node_id:
                return d
        raise KeyError(node_id.hex())

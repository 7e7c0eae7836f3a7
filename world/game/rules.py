"""The rules' numbers and the records GameState keeps: districts and consensus trials.

Times are seconds on the events' clock; credits are milli-credits (see
`hive_core.economy`). The records are mutable and private to `GameState`, which changes
them only under its lock; the view sees frozen snapshots (`snapshot.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hive_core.events import HealthUpdated

from .snapshot import Position, TrialStatus

ACTIVE_WINDOW_S = 1.0  # a district glows this long after its last stage, hop or answer
PULSE_LINGER_S = 0.25  # a pulse stays drawn this long after it lands (the arrival flash)
TRIAL_TIMEOUT_S = 30.0  # an open trial without a verdict expires after this
TOWER_LINGER_S = 5.0  # a resolved tower stays standing this long
FALL_S = 2.0  # a slashed district's fall
RISE_S = 1.5  # a building rising to its new height after a receipt
MC_PER_FLOOR = 1000  # one credit per floor: a 100-token answer on SmolLM2 is 3 floors
MAX_CLOCK_SKEW_S = 5.0  # events dated further in the future than this are refused
PRUNE_EVERY_S = 0.25  # landed pulses, gone towers and risen buildings are folded this often
MAX_PULSES = 4096  # a flood of hops keeps only the newest pulses
MAX_TRIALS = 4096  # likewise for trials
DEFAULT_QUORUM = 2  # a trial nobody announced a quorum for: 2 of 3 replicas

TrialKey = tuple[bytes, int]


@dataclass
class District:
    """What the game knows of one node (mutable, inside GameState's lock)."""

    position: Position | None = None
    online: bool = True
    presence_at: float = float("-inf")  # time of the health or leave event that set `online`
    health: HealthUpdated | None = None  # the latest by its own time, not by arrival
    last_active: float = float("-inf")
    efficiency: float = 1.0
    battery: float | None = None
    on_ac: bool = True
    credits_mc: int = 0
    settled_mc: int = 0  # credits whose building rise has finished
    # receipt id -> (time, mc) of credits whose building is still rising
    rising: dict[str, tuple[float, int]] = field(default_factory=dict)
    fallen_at: float | None = None
    slash_reason: str = ""
    slash_step: int | None = None  # the decode step of the slashing that felled it
    slash_proven: bool = False  # that slashing carried signed evidence

    def height(self, now: float) -> float:
        """Floors drawn at `now`: each receipt's credits rise over RISE_S from its time.

        A sum over receipts, so the order in which they were applied does not matter.
        """
        mc = float(self.settled_mc)
        for at, amount in sorted(self.rising.values()):  # fixed order: the same floats
            t = min(1.0, max(0.0, (now - at) / RISE_S))
            mc += amount * t * t * (3.0 - 2.0 * t)  # smoothstep: starts and lands softly
        return mc / MC_PER_FLOOR

    def settle(self, now: float) -> None:
        for rid in [r for r, (at, _) in self.rising.items() if at + RISE_S <= now]:
            self.settled_mc += self.rising.pop(rid)[1]


@dataclass
class Trial:
    """One consensus trial: the answers of its replicas, its verdict, its slashings."""

    opened_at: float
    announced_quorum: int = 0  # the largest quorum replicas announced (0: none yet)
    verdict_size: int = 0  # how many replicas the verdict accepted (0: no verdict yet)
    # node -> (digest, time): a replica's first answer is the one that counts
    answers: dict[bytes, tuple[bytes, float]] = field(default_factory=dict)
    verified_at: float | None = None
    agreeing: set[bytes] = field(default_factory=set)  # replicas the verdict accepted
    slashed: dict[bytes, float] = field(default_factory=dict)  # node -> time
    version: int = 0  # bumped whenever an event touches it (its drawn tower may change)
    view: object = None  # (version, its tower) once nothing about it depends on the clock

    def settled(self, now: float) -> bool:
        """Verified, with every answer and slashing in by `now`: its tower no longer changes
        with the clock (until the next event about it)."""
        last = max([at for _, at in self.answers.values()] + list(self.slashed.values()), default=0.0)
        return self.verified_at is not None and self.verified_at <= now and last <= now

    @property
    def quorum(self) -> int:
        """As announced by the replicas, else the verdict's size, else 2 (of 3 replicas)."""
        return self.announced_quorum or self.verdict_size or DEFAULT_QUORUM

    def arrived(self, now: float) -> dict[bytes, bytes | None]:
        """Answers that had arrived by `now`, in order of arrival; once verified, accepted
        replicas whose answer was never announced join with digest None."""
        got = sorted((at, node, digest) for node, (digest, at) in self.answers.items())
        out: dict[bytes, bytes | None] = {node: digest for at, node, digest in got if at <= now}
        if self.verified_at is not None and self.verified_at <= now:
            for node in sorted(self.agreeing - out.keys()):
                out[node] = None
        return out

    def status(self, now: float) -> tuple[TrialStatus, float | None]:
        if self.verified_at is not None and self.verified_at <= now:
            return TrialStatus.VERIFIED, self.verified_at
        if now - self.opened_at >= TRIAL_TIMEOUT_S:
            return TrialStatus.EXPIRED, self.opened_at + TRIAL_TIMEOUT_S
        return TrialStatus.OPEN, None


def tower_gone(t: Trial, now: float) -> bool:
    _, resolved = t.status(now)
    return resolved is not None and now > resolved + TOWER_LINGER_S


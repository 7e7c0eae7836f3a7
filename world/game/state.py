"""The game state: hive events applied in, what to draw at any instant read out.

`GameState.apply(event, now)` folds one event (see `events.py`) into the state;
`GameState.snapshot(now)` derives what the view draws at clock time `now` without
changing anything, so the view may call it every frame. Rules of the game:

- A tensor hop is a pulse travelling from `sent_at` over its measured hop time.
- Replica answers of one trial stack up as a tower; equal digests are answers that
  agree, and the tower converges as the largest group nears the quorum. A verdict marks
  it verified; a trial without one for `TRIAL_TIMEOUT_S` expires.
- A slashed node's district falls (an animation of `FALL_S`) and stays down.
- Each verified work receipt credits its worker once (signature checked here, amount by
  the economy's reward formula); every `MC_PER_FLOOR` milli-credits raise one floor.
- Heat and battery set the efficiency factor, which dims the district's lights.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hive_core.economy import EconomyError, efficiency_factor

from .errors import GameError, GameEventError
from .events import (
    NODE_ID_BYTES,
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
from .snapshot import (
    DistrictSnapshot,
    GameSnapshot,
    Position,
    PulseSnapshot,
    TowerSnapshot,
    TrialStatus,
)

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

if TYPE_CHECKING:  # world.layout pulls in scikit-learn: the inference path never needs it
    from world.layout import MapSnapshot


@dataclass
class _District:
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
class _Trial:
    opened_at: float
    announced_quorum: int = 0  # the largest quorum replicas announced (0: none yet)
    verdict_size: int = 0  # how many replicas the verdict accepted (0: no verdict yet)
    # node -> (digest, time): a replica's first answer is the one that counts
    answers: dict[bytes, tuple[bytes, float]] = field(default_factory=dict)
    verified_at: float | None = None
    agreeing: set[bytes] = field(default_factory=set)  # replicas the verdict accepted
    slashed: dict[bytes, float] = field(default_factory=dict)  # node -> time

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


class GameState:
    """Hive events in, snapshots out. Thread-safe: events may come from worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._districts: dict[bytes, _District] = {}
        self._pulses: list[HopSent] = []
        self._trials: dict[TrialKey, _Trial] = {}
        self._receipts: set[str] = set()
        self._verified = 0
        self._slashings: set[tuple[TrialKey, bytes]] = set()
        self._rising: set[bytes] = set()  # districts with a building still rising
        self._pruned_at = float("-inf")
        # Drawing caches, not game state: district ids in order, and each district's last
        # view with the values it was built from (a frame reuses views that did not change).
        self._order: list[bytes] | None = None
        self._views: dict[bytes, tuple[tuple[object, ...], DistrictSnapshot]] = {}

    # -- the map ----------------------------------------------------------------------------

    def set_layout(self, layout: MapSnapshot | Mapping[bytes, Position]) -> None:
        """Place districts from the map (a `HiveMap` snapshot or node id -> position).

        Map snapshots keyed by text ids must use the ids' hex form.
        """
        pairs = layout.items() if isinstance(layout, Mapping) else layout.as_dict().items()
        placed: dict[bytes, Position] = {}
        for key, pos in pairs:
            node = _node_key(key)
            if len(pos) not in (2, 3):
                raise GameError(f"position of {node.hex()} must have 2 or 3 coordinates")
            placed[node] = tuple(float(v) for v in pos)
        with self._lock:
            for node, pos in placed.items():
                self._district(node).position = pos

    # -- events -----------------------------------------------------------------------------

    def apply(self, event: GameEvent, now: float) -> None:
        """Fold one event in. Raises `GameEventError` (state unchanged) for a forged receipt,
        an event dated too far in the future, or an object that is not a game event."""
        when = _event_time(event)
        if when > now + MAX_CLOCK_SKEW_S:
            raise GameEventError(f"{type(event).__name__} is dated {when - now:.1f} s ahead")
        if isinstance(event, ReceiptIssued):
            try:
                event.receipt.verify()
            except EconomyError as exc:
                raise GameEventError(f"refused receipt: {exc}") from None
        with self._lock:
            self._prune(now)
            self._apply(event)

    def _apply(self, event: GameEvent) -> None:
        if isinstance(event, StageStarted):
            self._touch(event.node_id, event.at)
        elif isinstance(event, HopSent):
            self._touch(event.from_node, event.sent_at)
            self._touch(event.to_node, event.sent_at + event.hop_time_s)
            if event not in self._pulses:  # a hop announced twice is one pulse
                self._pulses.append(event)
                del self._pulses[:-MAX_PULSES]
        elif isinstance(event, ReplicaAnswered):
            self._touch(event.node_id, event.at)
            trial = self._trial((event.session_id, event.step), event.at)
            trial.announced_quorum = max(trial.announced_quorum, event.quorum)
            old = trial.answers.get(event.node_id)
            # A replica's earliest answer counts (ties: the smaller digest), whatever the
            # order of delivery.
            if old is None or (event.at, event.digest) < (old[1], old[0]):
                trial.answers[event.node_id] = (event.digest, event.at)
        elif isinstance(event, Verified):
            self._on_verified(event)
        elif isinstance(event, Slashed):
            self._on_slashed(event)
        elif isinstance(event, ReceiptIssued):
            rid = event.receipt.receipt_id
            d = self._district(event.receipt.worker_id)
            if rid in self._receipts:
                # The same work is paid once, however often it is announced; its building
                # rises from the earliest announcement.
                if rid in d.rising and event.at < d.rising[rid][0]:
                    d.rising[rid] = (event.at, d.rising[rid][1])
                return
            self._receipts.add(rid)
            mc = event.receipt.reward_mc()
            d.credits_mc += mc
            d.rising[rid] = (event.at, mc)
            self._rising.add(event.receipt.worker_id)
        elif isinstance(event, HealthUpdated):
            d = self._district(event.node_id)
            if d.health is None or _health_order(event) > _health_order(d.health):
                d.health = event
                d.efficiency = efficiency_factor(
                    event.temperature_c, event.battery_pct, event.on_ac
                )
                d.battery = None if event.battery_pct is None else event.battery_pct / 100.0
                d.on_ac = event.on_ac
            self._presence(d, event.at, online=True)
        elif isinstance(event, NodeLeft):
            self._presence(self._district(event.node_id), event.at, online=False)
        else:
            raise GameEventError(f"not a game event: {type(event).__name__}")

    def _on_verified(self, event: Verified) -> None:
        key = (event.session_id, event.step)
        trial = self._trial(key, event.at)
        trial.verdict_size = max(trial.verdict_size, len(event.agreeing))
        trial.agreeing.update(event.agreeing)
        for node in event.agreeing:
            self._touch(node, event.at)
        if trial.verified_at is None:
            self._verified += 1
        if trial.verified_at is None or event.at < trial.verified_at:
            trial.verified_at = event.at

    def _on_slashed(self, event: Slashed) -> None:
        d = self._district(event.node_id)
        if d.fallen_at is None or (event.at, event.reason) < (d.fallen_at, d.slash_reason):
            d.fallen_at = event.at
            d.slash_reason = event.reason
        key = (event.session_id, event.step)
        trial = self._trial(key, event.at)
        trial.slashed[event.node_id] = min(event.at, trial.slashed.get(event.node_id, event.at))
        self._slashings.add((key, event.node_id))

    @staticmethod
    def _presence(d: _District, at: float, online: bool) -> None:
        # The latest news by its own time wins (a tie: online), whatever the arrival order.
        d.presence_at, d.online = max((d.presence_at, d.online), (at, online))

    def _touch(self, node: bytes, at: float) -> None:
        d = self._district(node)
        d.last_active = max(d.last_active, at)

    def _district(self, node: bytes) -> _District:
        d = self._districts.get(node)
        if d is None:
            d = self._districts[node] = _District()
            self._order = None
        return d

    def _trial(self, key: TrialKey, at: float) -> _Trial:
        trial = self._trials.get(key)
        if trial is None:
            trial = self._trials[key] = _Trial(opened_at=at)
            if len(self._trials) > MAX_TRIALS:
                del self._trials[next(iter(self._trials))]  # the oldest opened
        trial.opened_at = min(trial.opened_at, at)
        return trial

    def _prune(self, now: float) -> None:
        # Every event would make this O(state) per event: a few times a second is enough.
        if self._pruned_at <= now < self._pruned_at + PRUNE_EVERY_S:
            return
        self._pruned_at = now
        self._pulses = [
            p for p in self._pulses if p.sent_at + p.hop_time_s + PULSE_LINGER_S >= now
        ]
        for key in [k for k, t in self._trials.items() if _tower_gone(t, now)]:
            del self._trials[key]
        for node in list(self._rising):
            d = self._districts[node]
            d.settle(now)
            if not d.rising:
                self._rising.discard(node)

    # -- reading ----------------------------------------------------------------------------

    def snapshot(self, now: float) -> GameSnapshot:
        """What to draw at clock time `now` (the state is not changed)."""
        with self._lock:
            if self._order is None:
                self._order = sorted(self._districts)
            districts = tuple(
                self._district_view(node, self._districts[node], now) for node in self._order
            )
            pulses = tuple(
                self._pulse_view(p, now)
                for p in sorted(self._pulses, key=_pulse_order)
                if p.sent_at <= now <= p.sent_at + p.hop_time_s + PULSE_LINGER_S
            )
            towers = tuple(
                self._tower_view(k, t, now)
                for k, t in sorted(self._trials.items(), key=lambda kt: (kt[1].opened_at, kt[0]))
                if t.opened_at <= now and not _tower_gone(t, now)
            )
            return GameSnapshot(
                now=now,
                districts=districts,
                pulses=pulses,
                towers=towers,
                total_credits_mc=sum(d.credits_mc for d in self._districts.values()),
                verified_trials=self._verified,
                slashings=len(self._slashings),
            )

    def credits_mc(self, node: bytes) -> int:
        """Milli-credits `node` earned from verified receipts so far."""
        with self._lock:
            d = self._districts.get(node)
            return d.credits_mc if d else 0

    def _district_view(self, node: bytes, d: _District, now: float) -> DistrictSnapshot:
        fallen = d.fallen_at is not None and d.fallen_at <= now
        fall = min(1.0, (now - d.fallen_at) / FALL_S) if fallen and d.fallen_at is not None else 0.0
        active = d.online and not fallen and 0.0 <= now - d.last_active <= ACTIVE_WINDOW_S
        height = d.height(now) if d.rising else d.settled_mc / MC_PER_FLOOR
        key = (d.position, d.online, active, d.efficiency, d.battery, d.on_ac, d.credits_mc,
               height, fallen, fall, d.slash_reason)
        cached = self._views.get(node)
        if cached is not None and cached[0] == key:
            return cached[1]
        view = DistrictSnapshot(
            node_id=node,
            position=d.position,
            online=d.online,
            active=active,
            efficiency=d.efficiency,
            battery=d.battery,
            on_ac=d.on_ac,
            credits_mc=d.credits_mc,
            floors=d.credits_mc // MC_PER_FLOOR,
            building_height=height,
            fallen=fallen,
            fall_progress=fall,
            slash_reason=d.slash_reason if fallen else "",
        )
        self._views[node] = (key, view)
        return view

    def _pulse_view(self, p: HopSent, now: float) -> PulseSnapshot:
        progress = min(1.0, max(0.0, (now - p.sent_at) / p.hop_time_s))
        a, b = self._position(p.from_node), self._position(p.to_node)
        where = None
        if a is not None and b is not None and len(a) == len(b):
            where = tuple(x + (y - x) * progress for x, y in zip(a, b))
        return PulseSnapshot(
            p.session_id, p.from_node, p.to_node, p.sent_at, p.hop_time_s, p.nbytes, progress, where
        )

    def _tower_view(self, key: TrialKey, t: _Trial, now: float) -> TowerSnapshot:
        # Only answers that had arrived by `now` count, so a replay shows the tower growing.
        answers = t.arrived(now)
        accepted = {answers[n] for n in t.agreeing if answers.get(n) is not None}
        sizes: dict[bytes | None, int] = {}
        for digest in answers.values():
            # An accepted replica without an announced answer agrees with the accepted ones.
            if digest is None and accepted:
                digest = min(d for d in accepted if d is not None)
            sizes[digest] = sizes.get(digest, 0) + 1
        agreeing = max(sizes.values(), default=0)
        status, resolved = t.status(now)
        nodes = tuple(answers)
        return TowerSnapshot(
            session_id=key[0],
            step=key[1],
            nodes=nodes,
            answers=len(nodes),
            agreeing=agreeing,
            groups=len(sizes),
            quorum=t.quorum,
            convergence=min(1.0, agreeing / t.quorum),
            status=status,
            slashed=tuple(n for at, n in sorted((at, n) for n, at in t.slashed.items()) if at <= now),
            anchor=self._position(nodes[0]) if nodes else None,
            resolved_at=resolved,
        )

    def _position(self, node: bytes) -> Position | None:
        d = self._districts.get(node)
        return d.position if d else None


def _health_order(h: HealthUpdated) -> tuple[float, float, float, bool, float]:
    return (
        h.at,
        -1.0 if h.temperature_c is None else h.temperature_c,
        -1.0 if h.battery_pct is None else h.battery_pct,
        h.on_ac,
        h.stability,
    )


def _pulse_order(p: HopSent) -> tuple[float, bytes, bytes, bytes, float, int]:
    return (p.sent_at, p.from_node, p.to_node, p.session_id, p.hop_time_s, p.nbytes)


def _tower_gone(t: _Trial, now: float) -> bool:
    _, resolved = t.status(now)
    return resolved is not None and now > resolved + TOWER_LINGER_S


def _event_time(event: object) -> float:
    if isinstance(event, HopSent):
        return event.sent_at
    at = getattr(event, "at", None)
    if not isinstance(at, (int, float)):
        raise GameEventError(f"not a game event: {type(event).__name__}")
    return float(at)


def _node_key(key: object) -> bytes:
    """A node id from a map key: the 20 raw bytes, or their hex form."""
    if isinstance(key, bytes) and len(key) == NODE_ID_BYTES:
        return key
    if isinstance(key, str):
        try:
            raw = bytes.fromhex(key)
        except ValueError:
            raw = b""
        if len(raw) == NODE_ID_BYTES:
            return raw
    raise GameError(f"map key {key!r} is not a node id (20 bytes or their hex)")

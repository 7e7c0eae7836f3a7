"""The game state: hive events applied in, what to draw at any instant read out.

`GameState.apply(event, now)` folds one event (`hive_core.events`) into the state;
`GameState.snapshot(now)` derives what the view draws at clock time `now` without
changing anything, so the view may call it every frame. Rules of the game:

- A tensor hop is a pulse travelling from `sent_at` over its measured hop time.
- Replica answers of one trial stack up as a tower; equal digests are answers that
  agree, and the tower converges as the largest group nears the quorum. A verdict marks
  it verified; a trial without one for `TRIAL_TIMEOUT_S` expires.
- A slashed node's district falls (an animation of `FALL_S`) and stays down, once the
  slashing's signed evidence is re-checked here (a state fed from the network, with
  `require_evidence`, refuses a slashing that comes without it).
- Each verified work receipt credits its worker once (signature checked here, amount by
  the economy's reward formula); every `MC_PER_FLOOR` milli-credits raise one floor.
- Heat and battery set the efficiency factor, which dims the district's lights.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

from hive_core.economy import EconomyError, efficiency_factor
from hive_core.events import (
    HealthUpdated,
    HiveEvent,
    HopSent,
    NodeLeft,
    ReceiptIssued,
    ReplicaAnswered,
    Slashed,
    StageStarted,
    Verified,
    trial_fields,
)

from .checks import check_slashing, event_time, health_order, node_key, pulse_order
from .errors import GameError, GameEventError
from .rules import (
    ACTIVE_WINDOW_S,
    FALL_S,
    MAX_CLOCK_SKEW_S,
    MAX_PULSES,
    MAX_TRIALS,
    MC_PER_FLOOR,
    PRUNE_EVERY_S,
    PULSE_LINGER_S,
    District,
    Trial,
    TrialKey,
    tower_gone,
)
from .snapshot import DistrictSnapshot, GameSnapshot, Position, PulseSnapshot, TowerSnapshot
from .traffic import Traffic

if TYPE_CHECKING:  # world.layout pulls in scikit-learn: the inference path never needs it
    from world.layout import MapSnapshot


class GameState:
    """Hive events in, snapshots out. Thread-safe: events may come from worker threads.

    `require_evidence`: refuse a slashing without its signed evidence (events from the
    network); evidence that comes is checked either way.
    """

    def __init__(self, *, require_evidence: bool = False) -> None:
        self.require_evidence = require_evidence
        self._lock = threading.Lock()
        self._districts: dict[bytes, District] = {}
        self._pulses: list[HopSent] = []
        self._trials: dict[TrialKey, Trial] = {}
        self._receipts: set[str] = set()
        self._verified = 0
        self._slashings: set[tuple[TrialKey, bytes]] = set()
        self._rising: set[bytes] = set()  # districts with a building still rising
        self._pruned_at = float("-inf")
        self._traffic = Traffic()  # spans, step times, hop rates, sessions
        self._caught: dict[bytes, set[tuple[bytes, bytes]]] = {}  # node -> (liar, session) it outvoted
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
            node = node_key(key)
            if len(pos) not in (2, 3):
                raise GameError(f"position of {node.hex()} must have 2 or 3 coordinates")
            placed[node] = tuple(float(v) for v in pos)
        with self._lock:
            for node, pos in placed.items():
                self._district(node).position = pos

    # -- events -----------------------------------------------------------------------------

    def apply(self, event: HiveEvent, now: float) -> None:
        """Fold one event in. Raises `GameEventError` (state unchanged) for a forged receipt,
        a slashing its evidence does not prove, an event dated too far in the future, or an
        object that is not a game event."""
        when = event_time(event)
        if when > now + MAX_CLOCK_SKEW_S:
            raise GameEventError(f"{type(event).__name__} is dated {when - now:.1f} s ahead")
        if isinstance(event, ReceiptIssued):
            try:
                event.receipt.verify()
            except EconomyError as exc:
                raise GameEventError(f"refused receipt: {exc}") from None
        if isinstance(event, Slashed):
            check_slashing(event, self.require_evidence)
        with self._lock:
            self._prune(now)
            self._apply(event)

    def _apply(self, event: HiveEvent) -> None:
        if not isinstance(event, ReceiptIssued):  # a receipt counts once: see below
            self._traffic.apply(event)
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
            self._traffic.apply(event)
            mc = event.receipt.reward_mc()
            d.credits_mc += mc
            d.rising[rid] = (event.at, mc)
            self._rising.add(event.receipt.worker_id)
        elif isinstance(event, HealthUpdated):
            d = self._district(event.node_id)
            if d.health is None or health_order(event) > health_order(d.health):
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
        self._note_caught(key[0], trial)

    def _on_slashed(self, event: Slashed) -> None:
        d = self._district(event.node_id)
        if d.fallen_at is None or (event.at, event.reason) < (d.fallen_at, d.slash_reason):
            d.fallen_at = event.at
            d.slash_reason = event.reason
            d.slash_step = trial_fields(event.step)[0]
            d.slash_proven = event.evidence is not None
        key = (event.session_id, event.step)
        trial = self._trial(key, event.at)
        trial.slashed[event.node_id] = min(event.at, trial.slashed.get(event.node_id, event.at))
        self._slashings.add((key, event.node_id))
        self._note_caught(key[0], trial)

    def _note_caught(self, session: bytes, trial: Trial) -> None:
        """Replicas whose agreeing answers convicted a liar in this trial caught it."""
        for node in trial.agreeing:
            for liar in trial.slashed:
                if liar != node:
                    self._caught.setdefault(node, set()).add((liar, session))

    @staticmethod
    def _presence(d: District, at: float, online: bool) -> None:
        # The latest news by its own time wins (a tie: online), whatever the arrival order.
        d.presence_at, d.online = max((d.presence_at, d.online), (at, online))

    def _touch(self, node: bytes, at: float) -> None:
        d = self._district(node)
        d.last_active = max(d.last_active, at)

    def _district(self, node: bytes) -> District:
        d = self._districts.get(node)
        if d is None:
            d = self._districts[node] = District()
            self._order = None
        return d

    def _trial(self, key: TrialKey, at: float) -> Trial:
        """The trial `key` (opened if new), about to change: its drawn tower must be redone."""
        trial = self._trials.get(key)
        if trial is None:
            trial = self._trials[key] = Trial(opened_at=at)
            if len(self._trials) > MAX_TRIALS:
                del self._trials[next(iter(self._trials))]  # the oldest opened
        trial.opened_at = min(trial.opened_at, at)
        trial.version += 1
        return trial

    def _prune(self, now: float) -> None:
        # Every event would make this O(state) per event: a few times a second is enough.
        if self._pruned_at <= now < self._pruned_at + PRUNE_EVERY_S:
            return
        self._pruned_at = now
        self._pulses = [
            p for p in self._pulses if p.sent_at + p.hop_time_s + PULSE_LINGER_S >= now
        ]
        for key in [k for k, t in self._trials.items() if tower_gone(t, now)]:
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
                for p in sorted(self._pulses, key=pulse_order)
                if p.sent_at <= now <= p.sent_at + p.hop_time_s + PULSE_LINGER_S
            )
            towers = tuple(
                self._tower_view(k, t, now)
                for k, t in sorted(self._trials.items(), key=lambda kt: (kt[1].opened_at, kt[0]))
                if t.opened_at <= now and not tower_gone(t, now)
            )
            work, flows, sessions = self._traffic.read(now)
            return GameSnapshot(
                now=now,
                districts=districts,
                pulses=pulses,
                towers=towers,
                total_credits_mc=sum(d.credits_mc for d in self._districts.values()),
                verified_trials=self._verified,
                slashings=len(self._slashings),
                work=work,
                flows=flows,
                sessions=sessions,
                n_layers=self._traffic.n_layers,
            )

    def caught(self, node: bytes) -> set[tuple[bytes, bytes]]:
        """(liar, session) pairs in which `node`'s answer agreed with the verdict that slashed
        the liar: the liars it helped catch."""
        with self._lock:
            return set(self._caught.get(node, ()))

    def credits_mc(self, node: bytes) -> int:
        """Milli-credits `node` earned from verified receipts so far."""
        with self._lock:
            d = self._districts.get(node)
            return d.credits_mc if d else 0

    def _district_view(self, node: bytes, d: District, now: float) -> DistrictSnapshot:
        fallen = d.fallen_at is not None and d.fallen_at <= now
        fall = min(1.0, (now - d.fallen_at) / FALL_S) if fallen and d.fallen_at is not None else 0.0
        active = d.online and not fallen and 0.0 <= now - d.last_active <= ACTIVE_WINDOW_S
        height = d.height(now) if d.rising else d.settled_mc / MC_PER_FLOOR
        temperature = d.health.temperature_c if d.health is not None else None
        key = (d.position, d.online, active, d.efficiency, d.battery, d.on_ac, d.credits_mc,
               height, fallen, fall, d.slash_reason, temperature)
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
            temperature_c=temperature,
            slash_step=d.slash_step if fallen else None,
            slash_proven=d.slash_proven and fallen,
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

    def _tower_view(self, key: TrialKey, t: Trial, now: float) -> TowerSnapshot:
        # A settled trial's tower is the same at any later time: a frame loop reuses it.
        cached = t.view
        if isinstance(cached, tuple) and cached[0] == t.version and t.settled(now):
            return cached[1]
        view = self._new_tower_view(key, t, now)
        if t.settled(now):
            t.view = (t.version, view)
        return view

    def _new_tower_view(self, key: TrialKey, t: Trial, now: float) -> TowerSnapshot:
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

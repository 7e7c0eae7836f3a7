"""The game state (`world.game.GameState`) as frames for the scene, plus the HUD's facts.

`GameSource.frame(now)` turns `GameState.snapshot(now)` into a `WorldFrame`, reusing the
previous tuples when nothing in them changed so the scene skips those layers. Hops are
announced by the asker once their round trip is over; `PulseReplay` plays each one
from the moment it is heard, out and back, slowed by one factor for every hop so that
millisecond hops can be seen while their relative speeds stay the measured ones.
"""

from __future__ import annotations

import math
import statistics
import threading
from collections.abc import Callable, Iterable
from dataclasses import replace

from hive_core.base.stage import Part
from hive_core.events import HopSent
from world.game import GameState
from world.game.snapshot import GameSnapshot, SessionSnapshot, TrialStatus

from .districts import congestion_of
from .frame import DistrictView, HudView, PulseView, RoadView, TowerView, ViewError, WorldFrame
from .names import unique_names


class HudBoard:
    """The HUD's facts as the session learns them (thread-safe)."""

    def __init__(self, player: str = "") -> None:
        self._lock = threading.Lock()
        self._hud = HudView(player=player)

    def set(self, **fields: object) -> None:
        with self._lock:
            self._hud = replace(self._hud, **fields)  # type: ignore[arg-type]

    def notice(self, text: str, keep: int = 4) -> None:
        """An outcome to show the player for a while (a choice made, an achievement)."""
        with self._lock:
            self._hud = replace(self._hud, notices=(*self._hud.notices, text)[-keep:], refused="")

    def refuse(self, text: str) -> None:
        """A choice refused, with its reason: shown in red until the next outcome."""
        with self._lock:
            self._hud = replace(self._hud, refused=text)

    def append_answer(self, text: str) -> None:
        with self._lock:
            self._hud = replace(self._hud, answer=self._hud.answer + text)

    def view(self) -> HudView:
        with self._lock:
            return self._hud


class PulseReplay:
    """Tensor pulses replayed from `HopSent` events: out to the worker, then back."""

    def __init__(self, slow_motion: float = 1.0, keep_s: float = 30.0, max_lag_s: float = 0.75,
                 min_leg_s: float = 0.0, max_leg_s: float = 2.0) -> None:
        if slow_motion < 1.0:
            raise ViewError(f"slow motion must be >= 1, got {slow_motion}")
        self.slow_motion = slow_motion
        self.min_leg_s = min_leg_s  # shortest leg drawn (sub-millisecond loopback hops, spectated)
        self.max_leg_s = max_leg_s  # longest: a hop of seconds, slowed down, would crawl for minutes
        self._keep_s = keep_s
        self._max_lag_s = max_lag_s  # a link's queue of replays never falls further behind
        self._lock = threading.Lock()
        self._pulses: list[PulseView] = []
        self._busy_until: dict[tuple[str, str], float] = {}

    def hop(self, event: HopSent, heard_at: float) -> None:
        src, dst = event.from_node.hex(), event.to_node.hex()
        leg = min(max(event.hop_time_s * self.slow_motion, self.min_leg_s), self.max_leg_s)
        with self._lock:
            # Hops on one link queue up rather than overlap, as the bytes did on the wire.
            start = min(max(heard_at, self._busy_until.get((src, dst), 0.0)), heard_at + self._max_lag_s)
            self._busy_until[(src, dst)] = start + 2 * leg
            self._pulses.append(PulseView(src, dst, start, leg))
            self._pulses.append(PulseView(dst, src, start + leg, leg))

    def in_flight(self, now: float) -> tuple[PulseView, ...]:
        with self._lock:
            self._pulses = [p for p in self._pulses if p.start + p.duration + self._keep_s > now]
            return tuple(p for p in self._pulses if p.start <= now + 1.0 and now <= p.start + p.duration)


class GameSource:
    """A `WorldSource` reading the game state, the pulse replay and the HUD board."""

    def __init__(self, state: GameState, hud: HudBoard, pulses: PulseReplay | None = None,
                 me: bytes | None = None) -> None:
        self.state, self.hud, self.pulses, self.me = state, hud, pulses or PulseReplay(), me
        self.roads: tuple[RoadView, ...] = ()  # measured links, set by whoever measures them
        self.tflops: dict[str, float] = {}  # hex node id -> measured TFLOPS, when known
        self.names: dict[str, str] = {}  # hex node id -> a name to show instead of the made-up one
        self.roles: dict[str, str] = {}  # hex node id -> "asker", "you", "referee" (who knows)
        self.balance: Callable[[], int] | None = None  # the player's spendable credits, if known
        self._last = WorldFrame()

    def on_event(self, event: object, now: float) -> None:
        """Feed one hive event (what `hive_core.exec` hands its `on_event` hook)."""
        self.state.apply(event, now)  # type: ignore[arg-type]
        if isinstance(event, HopSent):
            self.pulses.hop(event, now)

    def frame(self, now: float) -> WorldFrame:
        snap = self.state.snapshot(now)
        last = self._last
        live = _latest_session(snap)
        roles = dict(self.roles)
        if live is not None and live.asker is not None:
            roles.setdefault(live.asker.hex(), "asker")
        if self.me is not None:
            roles.setdefault(self.me.hex(), "you")
        districts = _districts(snap, self.tflops, self.names, roles)
        towers = _towers(snap)
        pulses = self.pulses.in_flight(now)
        roads = _roads(self.roads, snap)
        hud = self.hud.view()
        if self.balance is not None:  # the ledger's balance: earned minus what was spent
            hud = replace(hud, credits_mc=self.balance())
        elif self.me is not None:
            hud = replace(hud, credits_mc=self.state.credits_mc(self.me))
        names = {d.node_id: d.name for d in districts}
        hud = replace(hud, consensus=_consensus(snap, hud.consensus), verified_steps=snap.verified_trials,
                      slashed=snap.slashings)
        if live is not None:
            if live.asker is not None:
                hud = replace(hud, asker=names.get(live.asker.hex(), live.asker.hex()[:8]))
            if hud.tokens_per_s == 0.0:  # nobody here measured it (a spectator): the feed's rate
                hud = replace(hud, tokens_per_s=_latest_rate(snap))
        self._last = WorldFrame(
            districts=last.districts if districts == last.districts else districts,
            roads=last.roads if roads == last.roads else roads,
            pulses=last.pulses if pulses == last.pulses else pulses,
            towers=last.towers if towers == last.towers else towers,
            hud=last.hud if hud == last.hud else hud,
        )
        return self._last


def _latest(sessions: Iterable[SessionSnapshot]) -> SessionSnapshot | None:
    """The answer most recently active among `sessions`."""
    return max(sessions, key=lambda s: (s.last_at, s.session_id), default=None)


def _latest_session(snap: GameSnapshot) -> SessionSnapshot | None:
    """The answer most recently active (the one a spectator is watching)."""
    return _latest(snap.sessions)


def _latest_rate(snap: GameSnapshot) -> float:
    """The decode rate of the answer most recently active that has one: an answer that has
    just begun (no decode step yet) leaves the last answer's rate on screen, not zero."""
    rated = _latest(s for s in snap.sessions if s.tokens_per_s > 0)
    return rated.tokens_per_s if rated is not None else 0.0


def _districts(snap: GameSnapshot, tflops: dict[str, float], names: dict[str, str],
               roles: dict[str, str]) -> tuple[DistrictView, ...]:
    placed = [d for d in snap.districts if d.position is not None]  # unplaced: not drawn yet
    made = unique_names(d.node_id.hex() for d in placed)
    work = {w.node_id: w for w in snap.work}
    ids = {d.node_id for d in placed if not d.fallen}  # a liar is out of the hive's pace
    # whole milliseconds: a label shows no more, and the district is not redrawn for less
    steps = {n: float(round(w.step_ms)) for n, w in work.items() if w.step_ms and n in ids}
    median = statistics.median(steps.values()) if steps else 0.0
    slowest = max(steps, key=lambda n: (steps[n], n)) if len(steps) >= 2 else None
    out = []
    for d in placed:
        nid = d.node_id.hex()
        w = work.get(d.node_id)
        step = steps.get(d.node_id, 0.0)
        congestion = congestion_of(step, median)
        spans = w.spans if w is not None else ()
        parts = {p for _, _, p in spans}
        part = "full" if not parts or Part.FULL in parts else min(parts).label
        evidence = ""
        if d.fallen:
            at = f" at step {d.slash_step}" if d.slash_step is not None else ""
            evidence = f"lied{at}: {d.slash_reason}" + (" (signed evidence)" if d.slash_proven else "")
        out.append(DistrictView(
            nid, float(d.position[0]), float(d.position[1]),  # type: ignore[index]
            tflops=tflops.get(nid, 1.0) or 1.0,
            battery=1.0 if d.battery is None else d.battery, efficiency=d.efficiency,
            fall=d.fall_progress if d.fallen else 0.0, active=d.active, online=d.online,
            floors=d.building_height, name=names.get(nid) or made[nid], role=roles.get(nid, ""),
            layers=tuple(sorted({(a, b) for a, b, _ in spans})), part=part, n_layers=snap.n_layers,
            step_ms=step, queued=w.queued if w is not None else 0, congestion=congestion,
            slowest=d.node_id == slowest, temperature_c=d.temperature_c, on_ac=d.on_ac,
            evidence=evidence, tokens=w.tokens if w is not None else 0))
    return tuple(out)


def _rate(hz: float) -> float:
    """A hop rate on a ladder of 12 % steps: traffic is redrawn when it changes that much."""
    return 0.0 if hz <= 0 else round(1.12 ** round(math.log(hz, 1.12)), 3)


def _roads(measured: tuple[RoadView, ...], snap: GameSnapshot) -> tuple[RoadView, ...]:
    """The measured roads with the tensor traffic on them; a link with traffic but no
    measurement yet is a road too (its RTT unknown: drawn as 0)."""
    rates = {(f.src.hex(), f.dst.hex()): _rate(f.rate_hz) for f in snap.flows}
    out, seen = [], set()
    for r in measured:
        seen.add(frozenset((r.a, r.b)))
        out.append(replace(r, rate_ab=rates.get((r.a, r.b), 0.0), rate_ba=rates.get((r.b, r.a), 0.0)))
    for (a, b), rate in sorted(rates.items()):
        if frozenset((a, b)) not in seen and rate > 0:
            seen.add(frozenset((a, b)))
            out.append(RoadView(a, b, 0.0, rate_ab=rate, rate_ba=rates.get((b, a), 0.0)))
    return tuple(out)


def _towers(snap: GameSnapshot) -> tuple[TowerView, ...]:
    """The latest trial's tower beside each district (older ones would stand in the same place)."""
    latest = {t.nodes[0]: t for t in snap.towers if t.nodes}  # towers come oldest first
    return tuple(
        TowerView(n.hex(), t.answers, t.quorum, t.status is TrialStatus.VERIFIED, t.agreeing)
        for n, t in sorted(latest.items())
    )


def _consensus(snap: GameSnapshot, note: str) -> str:
    head = f"{snap.verified_trials} steps verified, {snap.slashings} slashed"
    return f"{head}; {note}" if note and note != "-" else head

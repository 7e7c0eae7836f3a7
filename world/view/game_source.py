"""The game state (`world.game.GameState`) as frames for the scene, plus the HUD's facts.

`GameSource.frame(now)` turns `GameState.snapshot(now)` into a `WorldFrame`, reusing the
previous tuples when nothing in them changed so the scene skips those layers. Hops are
announced by the asker once their round trip is over; `PulseReplay` plays each one
from the moment it is heard, out and back, slowed by one factor for every hop so that
millisecond hops can be seen while their relative speeds stay the measured ones.
"""

from __future__ import annotations

import threading
from dataclasses import replace

from hive_core.events import HopSent
from world.game import GameState
from world.game.snapshot import GameSnapshot, TrialStatus

from .frame import DistrictView, HudView, PulseView, RoadView, TowerView, ViewError, WorldFrame


class HudBoard:
    """The HUD's facts as the session learns them (thread-safe)."""

    def __init__(self, player: str = "") -> None:
        self._lock = threading.Lock()
        self._hud = HudView(player=player)

    def set(self, **fields: object) -> None:
        with self._lock:
            self._hud = replace(self._hud, **fields)  # type: ignore[arg-type]

    def append_answer(self, text: str) -> None:
        with self._lock:
            self._hud = replace(self._hud, answer=self._hud.answer + text)

    def view(self) -> HudView:
        with self._lock:
            return self._hud


class PulseReplay:
    """Tensor pulses replayed from `HopSent` events: out to the worker, then back."""

    def __init__(self, slow_motion: float = 1.0, keep_s: float = 30.0, max_lag_s: float = 0.75,
                 min_leg_s: float = 0.0) -> None:
        if slow_motion < 1.0:
            raise ViewError(f"slow motion must be >= 1, got {slow_motion}")
        self.slow_motion = slow_motion
        self.min_leg_s = min_leg_s  # shortest leg drawn (sub-millisecond loopback hops, spectated)
        self._keep_s = keep_s
        self._max_lag_s = max_lag_s  # a link's queue of replays never falls further behind
        self._lock = threading.Lock()
        self._pulses: list[PulseView] = []
        self._busy_until: dict[tuple[str, str], float] = {}

    def hop(self, event: HopSent, heard_at: float) -> None:
        src, dst = event.from_node.hex(), event.to_node.hex()
        leg = max(event.hop_time_s * self.slow_motion, self.min_leg_s)
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
        self._last = WorldFrame()

    def on_event(self, event: object, now: float) -> None:
        """Feed one hive event (what `hive_core.exec` hands its `on_event` hook)."""
        self.state.apply(event, now)  # type: ignore[arg-type]
        if isinstance(event, HopSent):
            self.pulses.hop(event, now)

    def frame(self, now: float) -> WorldFrame:
        snap = self.state.snapshot(now)
        last = self._last
        districts = _districts(snap, self.tflops)
        towers = _towers(snap)
        pulses = self.pulses.in_flight(now)
        hud = self.hud.view()
        if self.me is not None:
            hud = replace(hud, credits_mc=self.state.credits_mc(self.me))
        hud = replace(hud, consensus=_consensus(snap, hud.consensus))
        self._last = WorldFrame(
            districts=last.districts if districts == last.districts else districts,
            roads=self.roads,
            pulses=last.pulses if pulses == last.pulses else pulses,
            towers=last.towers if towers == last.towers else towers,
            hud=last.hud if hud == last.hud else hud,
        )
        return self._last


def _districts(snap: GameSnapshot, tflops: dict[str, float]) -> tuple[DistrictView, ...]:
    out = []
    for d in snap.districts:
        if d.position is None:
            continue  # the map has not placed it yet
        nid = d.node_id.hex()
        out.append(DistrictView(
            nid, float(d.position[0]), float(d.position[1]), tflops=tflops.get(nid, 1.0) or 1.0,
            battery=1.0 if d.battery is None else d.battery, efficiency=d.efficiency,
            fall=d.fall_progress if d.fallen else 0.0, active=d.active, online=d.online,
            floors=d.building_height))
    return tuple(out)


def _towers(snap: GameSnapshot) -> tuple[TowerView, ...]:
    return tuple(
        TowerView(t.nodes[0].hex(), t.answers, t.quorum, t.status is TrialStatus.VERIFIED, t.agreeing)
        for t in snap.towers if t.nodes
    )


def _consensus(snap: GameSnapshot, note: str) -> str:
    head = f"{snap.verified_trials} steps verified, {snap.slashings} slashed"
    return f"{head}; {note}" if note and note != "-" else head

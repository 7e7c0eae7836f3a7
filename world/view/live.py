"""Live game state fed by hive events, handed to the scene as `WorldFrame`s.

Until `world.game` lands this is the view's game state: each hive event is one method
(stage started, hop sent, replica answered, verified, slashed, receipt, health), and
`frame(now)` rebuilds only the tuples that changed, so the scene skips the rest.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import replace

from .frame import DistrictView, HudView, PulseView, RoadView, TowerView, ViewError, WorldFrame

PULSE_LINGER_S = 0.1  # keep a pulse this long after it lands


class LiveWorld:
    """Thread-safe: hive callbacks may come from worker threads; the view reads on its own."""

    def __init__(self, player: str = "", slow_motion: float = 1.0) -> None:
        if slow_motion < 1.0:
            raise ViewError(f"slow motion must be >= 1, got {slow_motion}")
        # Millisecond hops are invisible at 60 frames a second: pulses may be played slower,
        # every hop by the same factor, so their relative speeds stay the measured ones.
        self.slow_motion = slow_motion
        self._lock = threading.Lock()
        self._districts: dict[str, DistrictView] = {}
        self._roads: tuple[RoadView, ...] = ()
        self._pulses: list[PulseView] = []
        self._towers: dict[str, TowerView] = {}
        self._hud = HudView(player=player)
        self._frame = WorldFrame(hud=self._hud)
        self._dirty: set[str] = set()

    # -- the map ------------------------------------------------------------------------

    def set_map(self, positions: Mapping[str, tuple[float, ...]], rtt_ms: Mapping[tuple[str, str], float]) -> None:
        """Place districts (map ms) and lay roads for measured pairs; keeps each node's health."""
        with self._lock:
            old = self._districts
            self._districts = {
                nid: replace(old[nid], x=float(p[0]), y=float(p[1])) if nid in old
                else DistrictView(nid, float(p[0]), float(p[1]))
                for nid, p in positions.items()
            }
            pairs = {(min(a, b), max(a, b)): v for (a, b), v in rtt_ms.items() if a != b}
            self._roads = tuple(RoadView(a, b, float(v)) for (a, b), v in sorted(pairs.items())
                                if a in positions and b in positions)
            self._dirty |= {"districts", "roads"}

    def health(self, node: str, *, tflops: float | None = None, battery: float | None = None,
               efficiency: float | None = None) -> None:
        changes = {k: v for k, v in (("tflops", tflops), ("battery", battery), ("efficiency", efficiency))
                   if v is not None}
        self._update(node, **changes)

    # -- inference events -----------------------------------------------------------------

    def stage_started(self, node: str) -> None:
        """`node` runs the stage in flight: it lights up (the others go quiet)."""
        with self._lock:
            self._need(node)
            for nid, d in self._districts.items():
                if d.active != (nid == node):
                    self._districts[nid] = replace(d, active=nid == node)
            self._dirty.add("districts")

    def hop_sent(self, src: str, dst: str, start: float, duration_s: float) -> None:
        """A tensor leaves `src` for `dst` at clock `start`; it lands after the measured hop time."""
        if duration_s < 0:
            raise ViewError(f"hop duration must be >= 0, got {duration_s}")
        with self._lock:
            self._need(src)
            self._need(dst)
            self._pulses.append(PulseView(src, dst, start, max(duration_s * self.slow_motion, 1e-3)))
            self._dirty.add("pulses")

    def replica_answered(self, node: str, answers: int, needed: int) -> None:
        with self._lock:
            self._need(node)
            self._towers[node] = TowerView(node, answers, needed, False)
            self._dirty.add("towers")

    def verified(self, node: str) -> None:
        with self._lock:
            t = self._towers.get(node)
            self._towers[node] = replace(t, verified=True) if t else TowerView(node, 1, 1, True)
            self._dirty.add("towers")

    def slashed(self, node: str, at: float) -> None:
        self._update(node, slashed_at=at, active=False)

    def status(self, **fields: object) -> None:
        """Set HUD fields (sharding, routing, kv_cache, consensus, tokens_per_s, credits_mc, answer)."""
        with self._lock:
            self._hud = replace(self._hud, **fields)  # type: ignore[arg-type]
            self._dirty.add("hud")

    def answer_piece(self, text: str) -> None:
        with self._lock:
            self._hud = replace(self._hud, answer=self._hud.answer + text)
            self._dirty.add("hud")

    def receipt(self, credits_mc: int) -> None:
        """A verified work receipt paid the player `credits_mc` milli-credits."""
        with self._lock:
            self._hud = replace(self._hud, credits_mc=self._hud.credits_mc + int(credits_mc))
            self._dirty.add("hud")

    def idle(self) -> None:
        """The ask is over: no district is active."""
        with self._lock:
            for nid, d in self._districts.items():
                if d.active:
                    self._districts[nid] = replace(d, active=False)
            self._dirty.add("districts")

    # -- reading ----------------------------------------------------------------------------

    def frame(self, now: float) -> WorldFrame:
        with self._lock:
            landed = [p for p in self._pulses if p.start + p.duration + PULSE_LINGER_S < now]
            if landed:
                self._pulses = [p for p in self._pulses if p not in landed]
                self._dirty.add("pulses")
            if not self._dirty:
                return self._frame
            f = self._frame
            self._frame = WorldFrame(
                districts=tuple(self._districts.values()) if "districts" in self._dirty else f.districts,
                roads=self._roads,
                pulses=tuple(self._pulses) if "pulses" in self._dirty else f.pulses,
                towers=tuple(self._towers.values()) if "towers" in self._dirty else f.towers,
                plots=f.plots,
                buildings=f.buildings,
                hud=self._hud,
            )
            self._dirty.clear()
            return self._frame

    def _need(self, node: str) -> None:
        if node not in self._districts:
            raise ViewError(f"event names node {node!r}, which is not on the map")

    def _update(self, node: str, **changes: object) -> None:
        with self._lock:
            self._need(node)
            self._districts[node] = replace(self._districts[node], **changes)  # type: ignore[arg-type]
            self._dirty.add("districts")

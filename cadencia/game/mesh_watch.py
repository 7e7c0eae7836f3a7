"""Spectating a running hive: its signed status records polled over the live mesh.

`MeshWatcher` joins through a node's `ws://` entry with a throwaway identity (it hosts
nothing), asks for every node's signed records (health, roles, per-peer RTTs), and turns
them into the game: districts placed by MDS of the measured RTTs, roads for measured
links, health events that light or dim each district.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from hive_core.events import HealthUpdated
from hive_core.mesh.status import fetch_status
from world.layout import HiveMap
from world.view.frame import RoadView, ViewError
from world.view.game_source import GameSource

POLL_S = 5.0  # seconds between two status requests


class MeshWatcher:
    """Keeps `source` showing the hive at `url`."""

    def __init__(self, source: GameSource, url: str, *, timeout_s: float = 10.0,
                 say: Callable[[str], None] = lambda _m: None) -> None:

        self.source, self.url, self.timeout_s, self.say = source, url, timeout_s, say
        self.map = HiveMap(dim=2)
        self.polls = 0
        self.rejected = 0  # malformed health records seen
        self.ready = asyncio.Event()  # set after the first status arrived
        self.node_ids: list[bytes] = []  # the nodes of the latest status (sentinels left out)
        self.hide: set[str] = set()  # hex ids not drawn (a spectator's own mesh node)

    async def poll_once(self) -> dict[str, Any]:
        view = await fetch_status(self.url, timeout_s=self.timeout_s)
        self.apply(view, time.monotonic())
        self.polls += 1
        self.ready.set()
        return view

    async def run(self, interval_s: float = POLL_S) -> None:
        """Poll until cancelled; the first failure is an error, later ones show on the HUD."""
        await self.poll_once()
        self.say(f"watching {self.url}: {len(self.source.roads)} measured links")
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.poll_once()
            except (ConnectionError, OSError) as exc:
                self.source.hud.set(routing=f"lost {self.url}: {exc}")

    def apply(self, view: dict[str, Any], now: float) -> None:
        """Fold one status view (`hive_core.mesh.status.status_view`'s shape) into the game."""
        try:
            nodes = [n for n in view["nodes"] if n["role"] != "sentinel" and n["id"] not in self.hide] \
                or [n for n in view["nodes"] if n["id"] not in self.hide]
            ids = [str(n["id"]) for n in nodes]
            rtt_rows = view.get("rtt_ms") or {}
        except (KeyError, TypeError) as exc:
            raise ViewError(f"malformed status from {self.url}: {exc}") from None
        if not ids:
            raise ViewError(f"{self.url} reports no nodes")
        try:
            self.node_ids = [bytes.fromhex(i) for i in ids]
        except ValueError as exc:
            raise ViewError(f"malformed node id from {self.url}: {exc}") from None
        index = {nid: k for k, nid in enumerate(ids)}
        rtt = np.full((len(ids), len(ids)), np.nan)
        np.fill_diagonal(rtt, 0.0)
        for a, row in rtt_rows.items():
            for b, ms in (row or {}).items():
                if a in index and b in index and isinstance(ms, (int, float)) and 0 <= ms < 1e5:
                    rtt[index[a], index[b]] = float(ms)
        snap = self.map.update(ids, rtt) if len(ids) >= 2 else None
        layout = snap.as_dict() if snap else {ids[0]: (0.0, 0.0)}
        try:
            self.source.state.set_layout({bytes.fromhex(str(k)): v for k, v in layout.items()})
        except ValueError as exc:
            raise ViewError(f"malformed node id from {self.url}: {exc}") from None
        pairs = {}
        for i in range(len(ids)):
            for j in range(i + 1, len(ids)):
                vals = [v for v in (rtt[i, j], rtt[j, i]) if np.isfinite(v)]
                if vals:
                    pairs[(ids[i], ids[j])] = sum(vals) / len(vals)
        self.source.roads = tuple(RoadView(a, b, ms) for (a, b), ms in sorted(pairs.items()))
        tflops = {}
        for n in nodes:
            h = n.get("health") or {}
            try:
                tflops[n["id"]] = float(h.get("tflops") or 0.0)
                self.source.on_event(HealthUpdated(
                    node_id=bytes.fromhex(n["id"]), temperature_c=h.get("temperature_c"),
                    battery_pct=h.get("battery_pct"), on_ac=bool(h.get("on_ac", True)),
                    stability=min(1.0, max(0.0, float(h.get("success_rate", 1.0)))), at=now), now)
            except (ValueError, TypeError):
                self.rejected += 1  # a malformed health record: the node is drawn without it
                continue
        self.source.tflops = tflops
        rtts = [ms for ms in pairs.values()]
        self.source.hud.set(
            sharding=f"{len(ids)} nodes: " + ", ".join(f"{n['id'][:6]} {n['role']}" for n in nodes[:6])
            + (" ..." if len(nodes) > 6 else ""),
            routing=f"{len(pairs)} measured links" + (f", RTT {min(rtts):.1f}-{max(rtts):.1f} ms" if rtts else ""))

"""Synthetic worlds on real latencies: N districts placed by MDS of RIPE Atlas country RTTs,
roads to each district's nearest peers, and player plots with buildings. For the bench and
for showing the view before a hive is up.

The districts carry everything the view draws for a live hive (names, layer spans of a
30-layer model, step times, one slashed liar, the slowest node's crates, a few hot or
draining devices, traffic on a third of the roads, Merkle towers), drawn from a seeded
generator: the picture costs what a real hive's does."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np

from world.layout import HiveMap, load_country_rtt, synthetic_hive
from world.view.districts import congestion_of
from world.view.frame import (
    BuildingView,
    DistrictView,
    HudView,
    PlotView,
    RoadView,
    TowerView,
    ViewError,
    WorldFrame,
)
from world.view.names import unique_names

ROAD_DEGREE = 3  # roads per district to its nearest peers on the map


def nearest_roads(ids: tuple[str, ...], xy: np.ndarray, rtt: np.ndarray, degree: int = ROAD_DEGREE
                  ) -> tuple[RoadView, ...]:
    """Roads from each node to its `degree` nearest map neighbours, labelled with the RTT
    (measured where known, else the map distance)."""
    n = len(ids)
    if n < 2:
        return ()
    if n > 2500:
        raise ViewError(f"nearest_roads builds a dense distance matrix: at most 2,500 nodes, got {n}")
    d = np.linalg.norm(xy[:, None, :] - xy[None, :, :], axis=-1)
    np.fill_diagonal(d, np.inf)
    seen: set[tuple[int, int]] = set()
    out = []
    for a in range(n):
        for b in np.argsort(d[a])[: min(degree, n - 1)]:
            key = (min(a, int(b)), max(a, int(b)))
            if key in seen:
                continue
            seen.add(key)
            value = rtt[a, b]
            out.append(RoadView(ids[key[0]], ids[key[1]], float(value if np.isfinite(value) else d[a, b])))
    return tuple(out)


@dataclass(frozen=True)
class SyntheticWorld:
    """A fixed frame; `frame(now)` returns it (pulses and falls animate from their clock times)."""

    base: WorldFrame

    def frame(self, now: float) -> WorldFrame:
        return self.base


N_LAYERS = 30  # the synthetic hive serves a model this deep


def synthetic_world(n_districts: int, n_buildings: int = 0, seed: int = 0) -> SyntheticWorld:
    """`n_districts` on the real-RTT map; buildings spread over one 10x10 plot per 100."""
    data = load_country_rtt()
    hive = synthetic_hive(data, n_districts, seed=seed)
    ids = tuple(hashlib.blake2b(f"{seed}:{k}".encode(), digest_size=20).hexdigest() for k in range(n_districts))
    snap = HiveMap(dim=2, seed=seed).update(ids, hive.rtt)
    xy = np.asarray(snap.positions)[:, :2]
    rng = np.random.default_rng(seed)
    names = unique_names(ids)
    steps = rng.lognormal(np.log(25.0), 0.3, n_districts)
    median, slowest = float(np.median(steps)), int(np.argmax(steps))
    districts = []
    for k, (nid, (x, y)) in enumerate(zip(ids, xy)):
        start = int(rng.integers(0, N_LAYERS - 4))
        end = min(N_LAYERS, start + int(rng.integers(4, 16)))
        districts.append(DistrictView(
            nid, float(x), float(y), tflops=float(rng.uniform(0.2, 4.0)),
            battery=float(rng.uniform(0.15, 1.0)), efficiency=float(rng.uniform(0.5, 1.0)),
            name=names[nid], role="asker" if k == 0 else "", layers=((start, end),) if k else (),
            n_layers=N_LAYERS, step_ms=round(float(steps[k])), active=bool(rng.random() < 0.1),
            congestion=congestion_of(float(steps[k]), median), slowest=k == slowest,
            temperature_c=float(rng.choice([45.0, 60.0, 85.0], p=[0.6, 0.3, 0.1])),
            on_ac=bool(rng.random() < 0.8), fall=1.0 if k == n_districts // 2 else 0.0,
            evidence="lied at step 7: output outside tolerance (signed evidence)" if k == n_districts // 2 else "",
            floors=float(rng.integers(0, 4))))
    roads = tuple(replace(r, rate_ab=float(rng.uniform(1.0, 20.0))) if rng.random() < 0.33 else r
                  for r in nearest_roads(ids, xy, hive.rtt))
    towers = tuple(TowerView(ids[k], 2, 2, bool(rng.random() < 0.7), 2)
                   for k in rng.choice(n_districts, size=max(1, n_districts // 10), replace=False))
    plots, buildings = _city(xy, n_buildings, rng)
    hud = HudView(sharding=f"{n_districts} nodes", routing=f"median RTT {np.nanmedian(hive.rtt):.0f} ms")
    return SyntheticWorld(WorldFrame(tuple(districts), roads, (), towers, plots, buildings, hud))


def _city(xy: np.ndarray, n_buildings: int, rng: np.random.Generator
          ) -> tuple[tuple[PlotView, ...], tuple[BuildingView, ...]]:
    if n_buildings <= 0:
        return (), ()
    side = 10
    n_plots = -(-n_buildings // (side * side))
    span = float(np.ptp(xy, axis=0).max()) or 10.0
    cell = span / 200.0
    plots = tuple(
        PlotView(f"plot{k}", f"player{k % 7}", float(xy[k % len(xy), 0]) + cell,
                 float(xy[k % len(xy), 1]) + cell, side, side, cell)
        for k in range(n_plots)
    )
    buildings = tuple(
        BuildingView(f"b{k}", f"plot{k // (side * side)}", k % side, (k // side) % side,
                     int(rng.integers(0, 4)), "tower", float(rng.uniform(0.5, 4.0)))
        for k in range(n_buildings)
    )
    return plots, buildings

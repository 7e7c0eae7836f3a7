"""Roads and the tensor traffic on them, as pure functions of the frame (numpy only).

A road runs between two districts' plazas. Traffic drives on the right: for every hop a
district sends down a road, a chevron goes out on one lane (cyan: the tensor going to the
next stage) and comes back on the other (amber: the stage's answer). Chevrons pass any point
at the link's measured hop rate divided by `hops_per_chevron`, a round number chosen so the
busiest road shows at most `MAX_CHEVRONS_PER_S` (the legend says which).
"""

from __future__ import annotations

import math

import numpy as np

from .districts import DistrictLayout
from .frame import RoadView

OUT = (0.3, 0.9, 1.0)  # a tensor going out to a stage
BACK = (1.0, 0.62, 0.15)  # the stage's answer coming back
MAX_CHEVRONS_PER_S = 4.0
SPEED = 1.5  # chevrons drive about this many district units a second
MAX_PER_LANE = 12
MAX_CHEVRONS = 1200  # in all: a busy map thins every lane (its rate stays right: they move faster)
NICE = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


def road_width(lay: DistrictLayout) -> float:
    return 0.3 * lay.unit


def hops_per_chevron(roads: tuple[RoadView, ...]) -> int:
    """The smallest round number of hops per chevron that keeps the busiest road legible."""
    top = max((max(r.rate_ab, r.rate_ba) for r in roads), default=0.0)
    for n in NICE:
        if top / n <= MAX_CHEVRONS_PER_S:
            return n
    return NICE[-1]


def road_ends(roads: tuple[RoadView, ...], lay: DistrictLayout) -> tuple[list[RoadView], np.ndarray]:
    """The roads whose districts are both drawn, and their centre lines ``[n, 2, 3]`` from
    plaza edge to plaza edge (z a little above the ground)."""
    idx = lay.index
    known = [r for r in roads if r.a in idx and r.b in idx and r.a != r.b]
    pts = np.zeros((len(known), 2, 3), np.float32)
    for k, r in enumerate(known):
        a, b = lay.xy[idx[r.a]], lay.xy[idx[r.b]]
        d = b - a
        length = float(np.hypot(*d)) or 1e-6
        u = d / length
        trim_a = min(0.95 * lay.footprint[idx[r.a]], 0.4 * length)
        trim_b = min(0.95 * lay.footprint[idx[r.b]], 0.4 * length)
        pts[k, 0, :2] = a + u * trim_a
        pts[k, 1, :2] = b - u * trim_b
    pts[:, :, 2] = 0.012 * lay.unit
    return known, pts


def traffic_rows(roads: tuple[RoadView, ...], lay: DistrictLayout, per_chevron: int) -> np.ndarray:
    """Chevron instances ``[n, 12]``: from (xyz, phase), to (xyz, cycles/s), colour (rgb, size)."""
    known, pts = road_ends(roads, lay)
    width = road_width(lay)
    size = 0.8 * width
    lanes = []
    for r, (a, b) in zip(known, pts):
        for rate, src, dst in ((r.rate_ab, a, b), (r.rate_ba, b, a)):
            if rate > 0:
                lanes += [(rate / per_chevron, color, p, q) for color, p, q in ((OUT, src, dst), (BACK, dst, src))]
    wanted = sum(_count(p, q, per_s, lay.unit) for per_s, _, p, q in lanes)
    thin = min(1.0, MAX_CHEVRONS / wanted) if wanted else 1.0
    rows: list[list[float]] = []
    for per_s, color, p, q in lanes:
        rows += _lane(p, q, per_s, width, size, color, max(1, int(_count(p, q, per_s, lay.unit) * thin)))
    return np.array(rows, np.float32).reshape(len(rows), 12)


def _count(p: np.ndarray, q: np.ndarray, per_s: float, unit: float) -> int:
    """Chevrons on a lane so that they drive at about `SPEED`."""
    length = float(np.hypot(*(q[:2] - p[:2])))
    return int(min(MAX_PER_LANE, max(1, round(length / (SPEED * unit) * per_s))))


def _lane(p: np.ndarray, q: np.ndarray, per_s: float, width: float, size: float,
          color: tuple[float, float, float], count: int) -> list[list[float]]:
    d = q[:2] - p[:2]
    length = float(np.hypot(*d))
    if length <= 1e-6:
        return []
    right = np.array((d[1], -d[0])) / length * (0.25 * width)
    start, end = p.copy(), q.copy()
    start[:2] += right
    end[:2] += right
    start[2] = end[2] = p[2] + 0.04 * width
    cycles = per_s / count
    return [[*start, k / count, *end, cycles, *color, size] for k in range(count)]


def chevron_position(row: np.ndarray, now: float) -> tuple[float, float, float]:
    """Where shaders/traffic.vert.glsl draws a chevron's centre at clock time `now`."""
    t = math.fmod(now * float(row[7]) + float(row[3]), 1.0)
    return tuple(float(row[k] + (row[4 + k] - row[k]) * t) for k in range(3))  # type: ignore[return-value]

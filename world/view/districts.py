"""Districts as blocks of boxes, a pure function of the frame (numpy only, tested without a GPU).

Each district stands on a stone plaza: its main building says what it serves (a tower with a
floor per layer for full blocks, a factory hall for attention or MLP halves, a station with a
mast for the asker, a watchtower for a referee), a few houses around it are varied by its id
(the same for every player), and its state shows on it: lit windows while it works, crates
piled in front when it is slower than the hive's median (from 1.2 times the median, up to
twelve at twice it, and one more per request queued at it), a flame on a hot roof, a battery running low, and, for a liar,
its block tipped over into rubble with a red beacon and the evidence slab beside it.

Rows are the instanced layer's format (see `ROW`): offset (x, y, z, turn), size (sx, sy, sz,
glow), colour (r, g, b, a), extra (floors drawn as bands, window density, 0, 0).
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass

import numpy as np

from .frame import DistrictView
from .palette import district_light

ROW = 16  # floats per instance
FLOOR = 0.1  # height of one layer's floor, in district units
MAX_CRATES = 18
STONE = (0.46, 0.45, 0.43, 1.0)
FACADES = ((0.62, 0.7, 0.82), (0.78, 0.72, 0.62), (0.7, 0.76, 0.72), (0.74, 0.66, 0.74),
           (0.66, 0.74, 0.84), (0.8, 0.7, 0.6))
GOLD = (1.0, 0.78, 0.3, 1.0)
CRATE = (0.85, 0.45, 0.12, 1.0)
LIAR = (1.0, 0.08, 0.05, 1.0)


@dataclass(frozen=True)
class DistrictLayout:
    """Where each district stands in world units (1 unit = 1 ms of RTT) and how big it is."""

    index: dict[str, int]
    xy: np.ndarray  # [n, 2]
    footprint: np.ndarray  # [n]
    height: np.ndarray  # [n]: its main building's roof
    unit: float  # typical spacing: the scale of districts, pulses and towers

    def top(self, node_id: str) -> tuple[float, float, float]:
        k = self.index[node_id]
        return (float(self.xy[k, 0]), float(self.xy[k, 1]), float(self.height[k]))


def district_layout(districts: tuple[DistrictView, ...]) -> DistrictLayout:
    """Footprints scale with the map so 20 or 2,000 districts both read as a city; a tower is
    as tall as the layers it serves (else as its compute)."""
    n = len(districts)
    xy = np.array([(d.x, d.y) for d in districts], np.float64).reshape(n, 2)
    if n >= 2:
        span = float(np.ptp(xy, axis=0).max()) or 1.0
        unit = max(min(span / math.sqrt(n) * 0.45, span * (0.08 if n > 12 else 0.13)), 0.05)
    else:
        unit = 4.0
    tf = np.array([max(d.tflops, 0.0) for d in districts], np.float64)
    rel = np.sqrt(tf / tf.max()) if n and tf.max() > 0 else np.ones(n)
    footprint = unit * (0.45 + 0.55 * rel)
    height = np.empty(n)
    for k, d in enumerate(districts):
        shape = main_shape(d)
        height[k] = unit * (shape[2] if shape[2] > 0 else 0.4 + 1.6 * rel[k])
        if d.fall > 0:
            height[k] *= 1.0 - 0.85 * d.fall
    return DistrictLayout({d.node_id: k for k, d in enumerate(districts)}, xy, footprint, height, unit)


@functools.lru_cache(maxsize=8192)
def _seed(node_id: str) -> bytes:
    """32 bytes that vary a district's look, the same on every machine."""
    return hashlib.blake2b(node_id.encode(), digest_size=32).digest()


SLOW_FROM = 1.2  # a node this many times the hive's median step time starts piling up work
SLOW_FULL = 2.0  # and has the full pile at this many times


def congestion_of(step_ms: float, median_ms: float) -> float:
    """0..1: how far beyond the hive's median a node's step time is (0 up to `SLOW_FROM` times
    the median, 1 from `SLOW_FULL` times), in steps of 0.05 (so a frame is not redrawn for less)."""
    if step_ms <= 0 or median_ms <= 0:
        return 0.0
    x = (step_ms / median_ms - SLOW_FROM) / (SLOW_FULL - SLOW_FROM)
    return round(min(1.0, max(0.0, x)) * 20) / 20


def layer_count(d: DistrictView) -> int:
    return sum(b - a for a, b in d.layers)


def main_shape(d: DistrictView) -> tuple[str, int, float]:
    """(kind, floors, height in units; 0: from compute) of the district's main building."""
    layers = layer_count(d)
    if layers and d.part != "full":
        return "factory", layers, 0.55
    if layers:
        return "tower", layers, FLOOR * layers + 0.1
    if d.role == "asker":
        return "station", 0, 0.5
    if d.role == "referee":
        return "watchtower", 0, 1.1
    return "block", 0, 0.0


def _row(x: float, y: float, z: float, turn: float, sx: float, sy: float, sz: float, glow: float,
         color: tuple[float, ...], floors: float = 0.0, windows: float = 0.0) -> list[float]:
    return [x, y, z, turn, sx, sy, sz, glow, *color[:3], color[3] if len(color) > 3 else 1.0,
            floors, windows, 0.0, 0.0]


def district_rows(d: DistrictView, x: float, y: float, foot: float, height: float,
                  unit: float, houses: bool = True) -> list[list[float]]:
    """The boxes of one district (see the module docstring); without `houses` when the
    district is a few pixels on screen (they would be specks)."""
    seed = _seed(d.node_id)
    rows: list[list[float]] = []
    fall = d.fall
    tilt = 0.6 * fall
    light = district_light(d.battery, d.efficiency, d.active) if d.online else 0.05
    facade = FACADES[seed[0] % len(FACADES)]
    if not d.online:
        facade = (0.25, 0.26, 0.28)
    if fall > 0:  # rubble: the colour of brick dust, darker as it falls
        facade = (0.55 * (1 - fall) + 0.3, 0.12, 0.1)
    glow = 0.0 if fall > 0 else (light if d.active else 0.35 * light)
    color: tuple[float, ...] = (*facade, 1.0)
    if d.active and fall == 0:
        color = tuple(0.5 * c + 0.5 * g for c, g in zip(color, GOLD))
    # the plaza the block stands on
    plaza = 1.9 * foot
    rows.append(_row(x, y, 0.0, 0.0, plaza, plaza, 0.03 * unit, 0.0, STONE))
    kind, floors, _ = main_shape(d)
    w = 0.78 * foot
    if kind == "tower":
        rows.append(_row(x, y, 0.0, tilt, w, w, height, glow, color, floors, 1.0))
        rows.append(_row(x, y, height, tilt, 0.6 * w, 0.6 * w, 0.06 * unit, glow * 0.5, color))
    elif kind == "factory":
        hall = max(0.2 * floors * FLOOR * unit, w)
        rows.append(_row(x, y, 0.0, tilt, hall, 0.8 * w, height, glow, color, floors, 0.5))
        for k in (-1, 1):  # chimneys
            rows.append(_row(x + 0.3 * k * hall, y + 0.25 * w, 0.0, tilt, 0.12 * w, 0.12 * w,
                             height * 1.9, 0.0, (0.35, 0.33, 0.32, 1.0)))
    elif kind == "station":
        rows.append(_row(x, y, 0.0, math.pi / 4, w, w, height, glow, (0.85, 0.9, 0.95, 1.0), 2, 1.0))
        rows.append(_row(x, y, 0.0, 0.0, 0.06 * w, 0.06 * w, height * 3.2, 0.8, (0.9, 0.95, 1.0, 1.0)))
        rows.append(_row(x, y, height * 3.2, math.pi / 4, 0.25 * w, 0.25 * w, 0.08 * w, 1.0,
                         (0.35, 0.95, 1.0, 1.0)))
    elif kind == "watchtower":
        rows.append(_row(x, y, 0.0, 0.0, 0.7 * w, 0.7 * w, 0.35 * unit, glow, color, 2, 0.6))
        rows.append(_row(x, y, 0.0, 0.0, 0.22 * w, 0.22 * w, height, glow, color, 0, 0.0))
        rows.append(_row(x, y, height, math.pi / 4, 0.4 * w, 0.4 * w, 0.1 * unit, 0.9, GOLD))
    else:
        rows.append(_row(x, y, 0.0, tilt, w, w, height, glow, color, round(height / unit / FLOOR), 1.0))
    # houses around it, varied by its id
    for k in range(2 + seed[1] % 3 if houses else 0):
        corner = seed[2 + k]
        ax, ay = (1 if corner & 1 else -1), (1 if corner & 2 else -1)
        hx = x + ax * (0.62 + 0.1 * ((corner >> 2) & 3) / 3) * foot
        hy = y + ay * (0.62 + 0.1 * ((corner >> 4) & 3) / 3) * foot
        size = (0.22 + 0.12 * (seed[6 + k] / 255)) * foot
        tall = (0.18 + 0.5 * (seed[10 + k] / 255)) * unit * (1.0 - 0.8 * fall)
        tint = FACADES[seed[14 + k] % len(FACADES)] if fall == 0 else facade
        rows.append(_row(hx, hy, 0.0, tilt * (k + 1) / 2, size, size * (0.8 + 0.4 * (seed[18 + k] / 255)),
                         tall, 0.25 * glow, (*tint, 1.0), max(1, round(tall / (FLOOR * unit))), 0.7))
    rows += _state_marks(d, x, y, foot, height, unit)
    return rows


def _state_marks(d: DistrictView, x: float, y: float, foot: float, height: float,
                 unit: float) -> list[list[float]]:
    rows: list[list[float]] = []
    if d.fall > 0:  # the liar: a red beacon and the evidence slab on the ground
        rows.append(_row(x, y, 0.0, 0.0, 0.12 * unit, 0.12 * unit, 3.0 * unit, 1.0, LIAR))
        rows.append(_row(x - 0.9 * foot, y - 0.6 * foot, 0.0, 0.3, 0.5 * foot, 0.35 * foot,
                         0.05 * unit, 0.8, (1.0, 0.85, 0.8, 1.0)))
        return rows
    crates = min(MAX_CRATES, round(6 * d.congestion) * 2 + min(d.queued, 6))
    size = 0.16 * unit
    for k in range(crates):  # a pile in front of the block: three wide, stacked
        col, row, layer = k % 3, (k // 3) % 3, k // 9
        rows.append(_row(x - 0.55 * foot + (col - 1) * 1.1 * size, y - 1.05 * foot - row * 1.1 * size,
                         layer * size, 0.1 * ((k * 7) % 5 - 2), size, size, size, 0.15,
                         (CRATE[0], CRATE[1] * (1.0 - 0.5 * d.congestion), CRATE[2], 1.0)))
    if d.hot:  # a flame on the roof
        for turn in (0.0, math.pi / 4):
            rows.append(_row(x, y, height, turn, 0.3 * foot, 0.08 * foot, 0.45 * unit, 1.0,
                             (1.0, 0.45, 0.05, 1.0)))
    if d.low_battery:  # a battery by the plaza's edge, filled as far as it is charged
        bx, by = x + 0.85 * foot, y - 0.85 * foot
        rows.append(_row(bx, by, 0.0, 0.0, 0.18 * unit, 0.12 * unit, 0.4 * unit, 0.0, (0.12, 0.12, 0.14, 1.0)))
        charge = max(d.battery, 0.05)
        rows.append(_row(bx, by - 0.065 * unit, 0.02 * unit, 0.0, 0.14 * unit, 0.01 * unit,
                         0.36 * unit * charge, 1.0, (1.0 - charge, 0.2 + 0.8 * charge, 0.1, 1.0)))
    if d.floors > 0:  # credits raise a golden building beside the district, a floor per credit
        rows.append(_row(x + 0.6 * foot, y + 0.75 * foot, 0.0, 0.0, 0.3 * unit, 0.3 * unit,
                         0.25 * unit * d.floors, 0.7, GOLD, max(1.0, d.floors), 1.0))
    return rows


def all_district_rows(districts: tuple[DistrictView, ...], lay: DistrictLayout,
                      houses: bool = True) -> np.ndarray:
    """Every district's boxes as one ``[n, ROW]`` float32 array."""
    rows: list[list[float]] = []
    for k, d in enumerate(districts):
        rows += district_rows(d, float(lay.xy[k, 0]), float(lay.xy[k, 1]), float(lay.footprint[k]),
                              float(lay.height[k]), lay.unit, houses)
    return np.array(rows, np.float32).reshape(len(rows), ROW)

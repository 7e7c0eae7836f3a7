"""The 3D scene as a function of a `WorldFrame`: districts, roads, pulses, towers, plots, buildings.

`Scene.sync(frame, now)` rewrites only the layers whose part of the frame changed (checked
by identity: sources hand out new tuples when something changes). Geometry carries no
state of its own; `layout` holds the numbers derived from the frame for picking and tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from panda3d.core import NodePath, TransparencyAttrib

from .frame import BuildingView, DistrictView, PlotView, PulseView, RoadView, TowerView, WorldFrame
from .geometry import InstancedLayer, grid_lines, road_lines
from .palette import district_light, kind_shape, owner_color, rtt_colors
from .shaders import load_shader

BOX = ("i_offset", "i_scale", "i_color")
PULSE = ("i_from", "i_to", "i_color")
SUN = (0.35, -0.55, 0.75)


@dataclass(frozen=True)
class DistrictLayout:
    """Where each district stands in world units (1 unit = 1 ms of RTT) and how big it is."""

    index: dict[str, int]
    xy: np.ndarray  # [n, 2]
    footprint: np.ndarray  # [n]
    height: np.ndarray  # [n]
    unit: float  # typical spacing: the scale of districts, pulses and towers

    def top(self, node_id: str) -> tuple[float, float, float]:
        k = self.index[node_id]
        return (float(self.xy[k, 0]), float(self.xy[k, 1]), float(self.height[k]))


def district_layout(districts: tuple[DistrictView, ...]) -> DistrictLayout:
    """Footprints scale with the map so 20 or 2,000 districts both read as a city."""
    n = len(districts)
    xy = np.array([(d.x, d.y) for d in districts], np.float64).reshape(n, 2)
    if n >= 2:
        span = float(np.ptp(xy, axis=0).max()) or 1.0
        unit = max(min(span / math.sqrt(n) * 0.45, span * 0.08), 0.05)
    else:
        unit = 4.0
    tf = np.array([max(d.tflops, 0.0) for d in districts], np.float64)
    rel = np.sqrt(tf / tf.max()) if n and tf.max() > 0 else np.ones(n)
    footprint = unit * (0.45 + 0.55 * rel)
    height = unit * (0.4 + 1.6 * rel)
    return DistrictLayout({d.node_id: k for k, d in enumerate(districts)}, xy, footprint, height, unit)


class Scene:
    """Owns the scene graph under `parent`; `sync` makes it show a frame."""

    def __init__(self, parent: NodePath) -> None:
        self.root = parent.attach_new_node("world")
        box_shader, self._pulse_shader = load_shader("instanced"), load_shader("pulse")
        self.ground = self.root.attach_new_node("ground")  # grid lines, rebuilt as the map changes
        self.ground.set_shader(load_shader("road"))
        self.roads = self.root.attach_new_node("roads")
        self.roads.set_shader(load_shader("road"))
        self.roads.set_render_mode_thickness(2.0)
        self.layers: dict[str, InstancedLayer] = {}
        for name in ("districts", "towers", "plots", "slabs", "buildings", "roofs", "cursor"):
            # "roofs": buildings too small on screen for walls are drawn as their roofs alone
            # (2 triangles instead of 10: a CPU rasteriser's cost is per triangle).
            # "slabs": likewise, far plots are one quad each rather than a tile per cell.
            layer = InstancedLayer(name, BOX, self.root,
                                   faces="tile" if name in ("plots", "slabs", "roofs") else "box")
            layer.np.set_shader(box_shader)
            layer.np.set_shader_input("u_sun", SUN)
            self.layers[name] = layer
        cursor = self.layers["cursor"].np
        cursor.set_transparency(TransparencyAttrib.M_alpha)
        cursor.set_depth_write(False)
        cursor.set_bin("transparent", 10)
        self.pulses = InstancedLayer("pulses", PULSE, self.root)
        self.pulses.np.set_shader(self._pulse_shader)
        self.pulses.np.set_shader_input("u_time", 0.0)
        self.pulses.np.set_shader_input("u_unit", 1.0)
        self.layout = district_layout(())
        self._detail = True
        self._seen: dict[str, object] = {}

    # -- sync -------------------------------------------------------------------------

    def sync(self, frame: WorldFrame, now: float) -> None:
        """Show `frame` at clock time `now` (seconds, the same clock as pulses and slashing)."""
        relayout = self._changed("districts", frame.districts)
        if relayout:
            self.layout = district_layout(frame.districts)
            self._fit_ground()
        if relayout:
            self._sync_districts(frame.districts)
        if relayout or self._changed("roads", frame.roads):
            self._sync_roads(frame.roads)
        if relayout or self._changed("pulses", frame.pulses):
            self._sync_pulses(frame.pulses)
        if relayout or self._changed("towers", frame.towers):
            self._sync_towers(frame.towers)
        plots_changed = self._changed("plots", frame.plots)
        if plots_changed:
            self._sync_plots(frame.plots)
        if plots_changed or self._changed("buildings", frame.buildings):
            self._sync_buildings(frame.plots, frame.buildings)
        self.pulses.np.set_shader_input("u_time", float(now))

    def _changed(self, key: str, value: object) -> bool:
        """Whether `value` is a different object from last frame's (sources reuse unchanged tuples)."""
        if self._seen.get(key) is value:
            return False
        self._seen[key] = value
        return True

    def _fit_ground(self) -> None:
        """A faint grid under the map, every power of ten of milliseconds that fits it."""
        lay = self.layout
        if len(lay.xy):
            lo, hi = lay.xy.min(axis=0), lay.xy.max(axis=0)
            centre, half = (lo + hi) / 2.0, float((hi - lo).max()) * 0.75 + 4 * lay.unit
        else:
            centre, half = np.zeros(2), 50.0
        step = float(10 ** round(math.log10(max(half / 4, 0.1))))
        self.ground.get_children().detach()
        grid = self.ground.attach_new_node(grid_lines("grid", half, step))
        grid.set_color(0.09, 0.12, 0.17, 1.0)
        self.ground.set_pos(round(float(centre[0]) / step) * step, round(float(centre[1]) / step) * step, 0.0)

    def _sync_districts(self, districts: tuple[DistrictView, ...]) -> None:
        lay = self.layout
        n = len(districts)
        rows = np.zeros((2 * n, 12), np.float32)
        for k, d in enumerate(districts):
            light = district_light(d.battery, d.efficiency, d.active) if d.online else 0.05
            if d.fall > 0:
                color, glow = (0.55 * (1 - d.fall) + 0.35, 0.08, 0.06, 1.0), 0.0
            elif d.active:
                color, glow = (1.0, 0.78, 0.3, 1.0), light
            else:
                color, glow = (0.2 + 0.3 * light, 0.45 + 0.4 * light, 0.6 + 0.4 * light, 1.0), light * 0.6
            # A fallen district collapses to rubble, turned askew (there is no ground to sink into).
            h = lay.height[k] * (1.0 - 0.85 * d.fall)
            rows[k, 0:4] = (lay.xy[k, 0], lay.xy[k, 1], 0.0, 0.6 * d.fall)
            rows[k, 4:8] = (lay.footprint[k], lay.footprint[k], h, glow)
            rows[k, 8:12] = color
            # Credits raise a golden building beside the district, a floor per credit.
            if d.floors > 0 and d.fall == 0:
                f = lay.footprint[k]
                rows[n + k, 0:4] = (lay.xy[k, 0] - 0.5 * f - 0.25 * lay.unit, lay.xy[k, 1], 0.0, 0.0)
                rows[n + k, 4:8] = (0.3 * lay.unit, 0.3 * lay.unit, 0.25 * lay.unit * d.floors, 0.7)
                rows[n + k, 8:12] = (1.0, 0.8, 0.35, 1.0)
        keep = np.ones(2 * n, bool)
        keep[n:] = rows[n:, 6] > 0
        self.layers["districts"].set_rows(rows[keep])

    def _sync_roads(self, roads: tuple[RoadView, ...]) -> None:
        self.roads.get_children().detach()
        idx, lay = self.layout.index, self.layout
        known = [r for r in roads if r.a in idx and r.b in idx]
        pts = np.zeros((len(known), 2, 3), np.float32)
        for k, r in enumerate(known):
            pts[k, 0, :2] = lay.xy[idx[r.a]]
            pts[k, 1, :2] = lay.xy[idx[r.b]]
        pts[:, :, 2] = 0.02 * lay.unit
        colors = rtt_colors(np.array([r.rtt_ms for r in known], np.float64))
        colors[:, :3] *= 0.8
        self.roads.attach_new_node(road_lines("road-lines", pts, colors))

    def _sync_pulses(self, pulses: tuple[PulseView, ...]) -> None:
        idx, lay = self.layout.index, self.layout
        live = [p for p in pulses if p.src in idx and p.dst in idx]
        rows = np.zeros((len(live), 12), np.float32)
        for k, p in enumerate(live):
            rows[k, 0:4] = (*self.pulse_end(p.src), p.start)
            rows[k, 4:8] = (*self.pulse_end(p.dst), p.duration)
            rows[k, 8:12] = (0.35, 0.95, 1.0, 1.0)
        self.pulses.np.set_shader_input("u_unit", float(lay.unit))
        self.pulses.set_rows(rows)

    def pulse_end(self, node_id: str) -> tuple[float, float, float]:
        """Where pulses leave and land: just above the district's roof."""
        x, y, z = self.layout.top(node_id)
        return x, y, z + 0.2 * self.layout.unit

    def _sync_towers(self, towers: tuple[TowerView, ...]) -> None:
        idx, lay = self.layout.index, self.layout
        out = []
        for t in towers:
            if t.node_id not in idx:
                continue
            k = lay.index[t.node_id]
            x, y = float(lay.xy[k, 0]) + 0.5 * lay.footprint[k] + 0.45 * lay.unit, float(lay.xy[k, 1])
            fx, fh = 0.3 * lay.unit, 0.45 * lay.unit
            for floor in range(max(t.needed, t.answers)):
                lit = t.verified or floor < t.answers
                odd = floor >= max(t.agreeing, 1) and floor < t.answers  # an answer outside the agreeing group
                color = ((1.0, 0.2, 0.15, 1.0) if odd else (1.0, 0.85, 0.25, 1.0) if t.verified
                         else (0.3, 0.9, 1.0, 1.0) if lit else (0.25, 0.25, 0.3, 1.0))
                out.append((x, y, floor * fh * 1.25, 0.0, fx, fx, fh,
                            1.0 if t.verified else 0.5 if lit else 0.0, *color))
            # the tower's crown: the Merkle root, lit once the replicas agree
            out.append((x, y, max(t.needed, t.answers) * fh * 1.25, math.pi / 4, 1.4 * fx, 1.4 * fx, 0.5 * fh,
                        1.0 if t.verified else 0.0, *((1.0, 0.95, 0.5, 1.0) if t.verified else (0.3, 0.3, 0.35, 1.0))))
        self.layers["towers"].set_rows(np.array(out, np.float32).reshape(len(out), 12))

    def _sync_plots(self, plots: tuple[PlotView, ...]) -> None:
        """One tile per cell, a little smaller than the cell: the gaps draw the snapping grid.
        From afar, one slab per plot."""
        rows, slabs = [], np.zeros((len(plots), 12), np.float32)
        for k, p in enumerate(plots):
            r, g, b = owner_color(p.owner)
            ii, jj = np.meshgrid(np.arange(p.width), np.arange(p.depth), indexing="ij")
            tiles = np.zeros((p.width * p.depth, 12), np.float32)
            tiles[:, 0] = p.x + (ii.ravel() + 0.5) * p.cell
            tiles[:, 1] = p.y + (jj.ravel() + 0.5) * p.cell
            tiles[:, 4:8] = (0.92 * p.cell, 0.92 * p.cell, 0.03 * p.cell, 0.05)
            tiles[:, 8:12] = (0.3 * r, 0.3 * g, 0.3 * b, 1.0)
            rows.append(tiles)
            slabs[k] = (p.x + p.width * p.cell / 2, p.y + p.depth * p.cell / 2, 0.0, 0.0,
                        p.width * p.cell, p.depth * p.cell, 0.03 * p.cell, 0.05, 0.3 * r, 0.3 * g, 0.3 * b, 1.0)
        self.layers["plots"].set_rows(np.concatenate(rows) if rows else np.zeros((0, 12), np.float32))
        self.layers["slabs"].set_rows(slabs)
        self.set_detail(self._detail)

    def _sync_buildings(self, plots: tuple[PlotView, ...], buildings: tuple[BuildingView, ...]) -> None:
        by_id = {p.plot_id: p for p in plots}
        rows = np.zeros((len(buildings), 12), np.float32)
        n = 0
        for b in buildings:
            p = by_id.get(b.plot_id)
            if p is None:
                continue
            cx, cy = building_centre(p, b.i, b.j)
            r, g, bl = owner_color(p.owner)
            sx, sy, sz = kind_shape(b.kind)
            rows[n] = (cx, cy, 0.03 * p.cell, b.rotation * math.pi / 2, sx * p.cell, sy * p.cell,
                       max(b.height * sz, 0.05) * p.cell, 0.35, r, g, bl, 1.0)
            n += 1
        self.layers["buildings"].set_rows(rows[:n])
        self.layers["roofs"].set_rows(rows[:n])
        self.set_detail(self._detail)

    def set_detail(self, near: bool) -> None:
        """Walls and cell tiles when cells are big enough on screen, else roofs and slabs."""
        self._detail = near
        for fine, coarse in (("buildings", "roofs"), ("plots", "slabs")):
            a, b = self.layers[fine], self.layers[coarse]
            (a.np.show if near and a.count else a.np.hide)()
            (b.np.show if not near and b.count else b.np.hide)()

    def show_cursor(self, plot: PlotView | None, i: int = 0, j: int = 0, ok: bool = True) -> None:
        """The editor's cell marker: green where an edit may go, red where it would be refused."""
        if plot is None:
            self.layers["cursor"].set_rows(np.zeros((0, 12), np.float32))
            return
        cx, cy = building_centre(plot, i, j)
        color = (0.2, 1.0, 0.35, 0.45) if ok else (1.0, 0.15, 0.1, 0.55)
        row = (cx, cy, 0.0, 0.0, plot.cell * 0.98, plot.cell * 0.98, 0.12 * plot.cell, 0.8, *color)
        self.layers["cursor"].set_rows(np.array([row], np.float32))


def pulse_position(a: tuple[float, float, float], b: tuple[float, float, float], t: float, unit: float
                   ) -> tuple[float, float, float]:
    """Where a pulse is at fraction `t` of its hop: what shaders/pulse.vert.glsl computes."""
    t = min(max(t, 0.0), 1.0)
    x, y, z = (a[k] + (b[k] - a[k]) * t for k in range(3))
    span = math.dist(a, b)
    return x, y, z + math.sin(math.pi * t) * (0.6 * unit + 0.15 * span)


def building_centre(plot: PlotView, i: int, j: int) -> tuple[float, float]:
    """World x, y of the middle of cell (i, j) of `plot`."""
    return plot.x + (i + 0.5) * plot.cell, plot.y + (j + 0.5) * plot.cell

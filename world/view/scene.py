"""The 3D scene as a function of a `WorldFrame`: districts, roads, pulses, towers, plots, buildings.

`Scene.sync(frame, now)` rewrites only the layers whose part of the frame changed (checked
by identity: sources hand out new tuples when something changes). Geometry carries no
state of its own; `layout` holds the numbers derived from the frame for picking and tests.
"""

from __future__ import annotations

import math

import numpy as np
from panda3d.core import NodePath, TransparencyAttrib

from .districts import ROW, all_district_rows, district_layout
from .frame import BuildingView, DistrictView, PlotView, PulseView, RoadView, TowerView, WorldFrame
from .geometry import InstancedLayer, grid_lines, road_ribbons, sky_dome
from .palette import kind_shape, owner_color, rtt_colors
from .roads import hops_per_chevron, road_ends, road_width, traffic_rows
from .shaders import load_shader

BOX = ("i_offset", "i_scale", "i_color", "i_extra")
PULSE = ("i_from", "i_to", "i_color")
SUN = (-0.45, -0.5, 0.55)  # towards a low evening sun: long shadows, lit south-west walls
FOG = (0.64, 0.6, 0.62)  # the horizon's haze, also the sky's lowest colour
GROUND = (0.23, 0.27, 0.21)  # the land: the window's clear colour
SHADE = (0.13, 0.15, 0.12)
SKIRT_DEG = 20.0  # the sky dome reaches this far below the horizon
# The city's draw order (a fixed-order bin between the opaque and transparent ones): tall
# things first, so that a CPU rasteriser's early depth test skips shading the ground layers
# they hide; `FLUSH` hands what was drawn so far to the rasteriser's threads (glFlush), so
# they fill it while the rest of the frame is still being submitted instead of after.
FLUSH = "flush"
DRAW_ORDER = ("districts", "towers", "slabs", "plots", "buildings", "roofs", FLUSH,
              "plazas", "roads", "ground", "shadows", "traffic", "pulses")
WORLD_BIN = "city"


class Scene:
    """Owns the scene graph under `parent`; `sync` makes it show a frame."""

    def __init__(self, parent: NodePath) -> None:
        self.root = parent.attach_new_node("world")
        box_shader, self._pulse_shader = load_shader("instanced"), load_shader("pulse")
        for name, value in (("u_sun", SUN), ("u_fog_color", FOG), ("u_fog_range", (1e4, 1e5)),
                            ("u_unit", 1.0), ("u_time", 0.0), ("u_ground", GROUND)):
            self.root.set_shader_input(name, value)
        self.sky = self.root.attach_new_node(sky_dome("sky"))
        self.sky.set_shader(load_shader("sky"))
        self.sky.set_two_sided(True)
        self.sky.set_bin("background", 0)
        self.sky.set_depth_write(False)
        self.sky.set_depth_test(False)
        # The land is the window's clear colour (see `GROUND`): only its survey grid is drawn.
        self.ground = self.root.attach_new_node("ground")  # rebuilt as the map changes
        self.ground.set_shader(load_shader("grid"))
        self.roads = self.root.attach_new_node("roads")
        self.roads.set_shader(load_shader("road"))
        self.layers: dict[str, InstancedLayer] = {}
        self.shadows = InstancedLayer("shadows", BOX, self.root)
        self.shadows.np.set_shader(load_shader("shadow"))
        self.shadows.np.set_shader_input("u_shadow", SHADE)
        self.shadows.np.set_shader_input("u_lift", 0.0)
        flat_shader = load_shader("flat")
        self.plazas = InstancedLayer("plazas", BOX, self.root, faces="tile")  # cheap: no walls, flat shade
        self.plazas.np.set_shader(flat_shader)
        for name in ("districts", "towers", "plots", "slabs", "buildings", "roofs", "cursor"):
            # "roofs": buildings too small on screen for walls are drawn as their roofs alone
            # (2 triangles instead of 10: a CPU rasteriser's cost is per triangle).
            # "slabs": likewise, far plots are one quad each rather than a tile per cell.
            tile = name in ("plots", "slabs", "roofs")
            layer = InstancedLayer(name, BOX, self.root, faces="tile" if tile else "box")
            layer.np.set_shader(flat_shader if tile else box_shader)  # tiles: no walls to light
            self.layers[name] = layer
        cursor = self.layers["cursor"].np
        cursor.set_transparency(TransparencyAttrib.M_alpha)
        cursor.set_depth_write(False)
        cursor.set_bin("transparent", 10)
        self.traffic = InstancedLayer("traffic", PULSE, self.root, faces="chevron")
        self.traffic.np.set_shader(load_shader("traffic"))
        self.traffic.np.set_two_sided(True)
        self.hops_per_chevron = 1  # the legend's scale: hops a chevron stands for
        self.pulses = InstancedLayer("pulses", PULSE, self.root)
        self.pulses.np.set_shader(self._pulse_shader)
        self._order_draws()
        self.layout = district_layout(())
        self._detail = True
        self._houses = True  # districts big enough on screen to show their houses
        self._districts: tuple[DistrictView, ...] = ()
        self._seen: dict[str, object] = {}

    def _order_draws(self) -> None:
        """Put the city's layers in `DRAW_ORDER`, with a glFlush where it says (none where
        this platform has no libGL to call)."""
        from panda3d.core import (
            CallbackNode,
            CullBinEnums,
            CullBinManager,
            OmniBoundingVolume,
            PythonCallbackObject,
        )

        from .config import gl_entry

        bins = CullBinManager.get_global_ptr()
        if bins.find_bin(WORLD_BIN) < 0:
            opaque = bins.get_bin_sort(bins.find_bin("opaque"))
            bins.add_bin(WORLD_BIN, CullBinEnums.BT_fixed, opaque + 1)
        flush = gl_entry("glFlush")
        nodes = {"ground": self.ground, "roads": self.roads, "shadows": self.shadows.np,
                 "plazas": self.plazas.np, "traffic": self.traffic.np, "pulses": self.pulses.np,
                 **{name: layer.np for name, layer in self.layers.items()}}
        for k, name in enumerate(DRAW_ORDER):
            if name != FLUSH:
                nodes[name].set_bin(WORLD_BIN, k)
            elif flush is not None:
                cb = CallbackNode(FLUSH)
                cb.set_draw_callback(PythonCallbackObject(lambda _data: flush()))
                cb.set_bounds(OmniBoundingVolume())  # drawn whatever the camera sees
                cb.set_final(True)
                self.root.attach_new_node(cb).set_bin(WORLD_BIN, k)

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
            self._sync_roads(frame.roads, relayout)
        if relayout or self._changed("pulses", frame.pulses):
            self._sync_pulses(frame.pulses)
        if relayout or self._changed("towers", frame.towers):
            self._sync_towers(frame.towers)
        plots_changed = self._changed("plots", frame.plots)
        if plots_changed:
            self._sync_plots(frame.plots)
        if plots_changed or self._changed("buildings", frame.buildings):
            self._sync_buildings(frame.plots, frame.buildings)
        self.root.set_shader_input("u_time", float(now))

    def _changed(self, key: str, value: object) -> bool:
        """Whether `value` is a different object from last frame's (sources reuse unchanged tuples)."""
        if self._seen.get(key) is value:
            return False
        self._seen[key] = value
        return True

    def _fit_ground(self) -> None:
        """A faint survey line every power of ten of milliseconds, well beyond the map."""
        lay = self.layout
        if len(lay.xy):
            lo, hi = lay.xy.min(axis=0), lay.xy.max(axis=0)
            centre, half = (lo + hi) / 2.0, float((hi - lo).max()) * 0.75 + 4 * lay.unit
        else:
            centre, half = np.zeros(2), 50.0
        step = float(10 ** round(math.log10(max(half / 4, 0.1))))
        self.ground.get_children().detach()
        self.ground.attach_new_node(grid_lines("grid", 1.5 * half, 2 * step))
        self.ground.set_pos(round(float(centre[0]) / step) * step, round(float(centre[1]) / step) * step, 0.0)
        self.root.set_shader_input("u_unit", float(lay.unit))
        self.shadows.np.set_shader_input("u_lift", 0.004 * lay.unit)

    def set_view(self, eye: tuple[float, float, float], distance: float, top_ray_deg: float = 90.0) -> None:
        """Keep the sky around the camera at `eye`, and the haze beyond the city; the dome is
        not drawn at all while the view's top edge looks below its skirt (`top_ray_deg`: how
        far below the horizon that edge looks)."""
        (self.sky.hide if top_ray_deg > SKIRT_DEG else self.sky.show)()
        self.sky.set_pos(*eye)
        self.sky.set_scale(5e4)
        self.root.set_shader_input("u_fog_range", (1.1 * distance, 3.5 * distance))

    def _sync_districts(self, districts: tuple[DistrictView, ...]) -> None:
        self._districts = districts
        rows = all_district_rows(districts, self.layout, self._houses)
        flat = rows[:, 6] <= 0.031 * self.layout.unit  # plazas and slabs: drawn as tiles
        self.plazas.set_rows(rows[flat])
        rows = rows[~flat]
        self.layers["districts"].set_rows(rows)
        # only buildings tall enough to cast a shadow worth its fill (plazas, crates: none)
        self.shadows.set_rows(rows[rows[:, 6] > 0.3 * self.layout.unit] if len(rows) else rows)
        if not self._houses:
            self.shadows.np.hide()

    def _sync_roads(self, roads: tuple[RoadView, ...], relayout: bool) -> None:
        lay = self.layout
        known, pts = road_ends(roads, lay)
        paved = tuple((r.a, r.b, r.rtt_ms) for r in known)
        if relayout or self._seen.get("paved") != paved:  # traffic changes far more often
            self._seen["paved"] = paved
            self.roads.get_children().detach()
            colors = rtt_colors(np.array([r.rtt_ms for r in known], np.float64))
            self.roads.attach_new_node(road_ribbons("road-ribbons", pts, road_width(lay), colors))
        self.hops_per_chevron = hops_per_chevron(tuple(known))
        self.traffic.set_rows(traffic_rows(tuple(known), lay, self.hops_per_chevron))

    def _sync_pulses(self, pulses: tuple[PulseView, ...]) -> None:
        lay = self.layout
        idx = lay.index
        live = [p for p in pulses if p.src in idx and p.dst in idx]
        ends = np.zeros((len(lay.xy), 3), np.float64)  # where pulses leave and land, per district
        ends[:, :2] = lay.xy
        ends[:, 2] = lay.height + 0.2 * lay.unit
        src = np.array([idx[p.src] for p in live], np.int64)
        dst = np.array([idx[p.dst] for p in live], np.int64)
        rows = np.zeros((len(live), 12), np.float32)
        if live:
            rows[:, 0:3] = ends[src]
            rows[:, 3] = [p.start for p in live]
            rows[:, 4:7] = ends[dst]
            rows[:, 7] = [p.duration for p in live]
            rows[:, 8:12] = (0.35, 0.95, 1.0, 1.0)
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
                            1.0 if t.verified else 0.5 if lit else 0.0, *color, 0.0, 0.0, 0.0, 0.0))
            # the tower's crown: the Merkle root, lit once the replicas agree
            out.append((x, y, max(t.needed, t.answers) * fh * 1.25, math.pi / 4, 1.4 * fx, 1.4 * fx, 0.5 * fh,
                        1.0 if t.verified else 0.0, *((1.0, 0.95, 0.5, 1.0) if t.verified else (0.3, 0.3, 0.35, 1.0)),
                        0.0, 0.0, 0.0, 0.0))
        self.layers["towers"].set_rows(np.array(out, np.float32).reshape(len(out), ROW))

    def _sync_plots(self, plots: tuple[PlotView, ...]) -> None:
        """One tile per cell, a little smaller than the cell: the gaps draw the snapping grid.
        From afar, one slab per plot."""
        rows, slabs = [], np.zeros((len(plots), ROW), np.float32)
        for k, p in enumerate(plots):
            r, g, b = owner_color(p.owner)
            ii, jj = np.meshgrid(np.arange(p.width), np.arange(p.depth), indexing="ij")
            tiles = np.zeros((p.width * p.depth, ROW), np.float32)
            tiles[:, 0] = p.x + (ii.ravel() + 0.5) * p.cell
            tiles[:, 1] = p.y + (jj.ravel() + 0.5) * p.cell
            tiles[:, 4:8] = (0.92 * p.cell, 0.92 * p.cell, 0.03 * p.cell, 0.05)
            tiles[:, 8:12] = (0.3 * r, 0.3 * g, 0.3 * b, 1.0)
            rows.append(tiles)
            slabs[k] = (p.x + p.width * p.cell / 2, p.y + p.depth * p.cell / 2, 0.0, 0.0,
                        p.width * p.cell, p.depth * p.cell, 0.03 * p.cell, 0.05, 0.3 * r, 0.3 * g, 0.3 * b, 1.0,
                        0.0, 0.0, 0.0, 0.0)
        self.layers["plots"].set_rows(np.concatenate(rows) if rows else np.zeros((0, ROW), np.float32))
        self.layers["slabs"].set_rows(slabs)
        self.set_detail(self._detail)

    def _sync_buildings(self, plots: tuple[PlotView, ...], buildings: tuple[BuildingView, ...]) -> None:
        by_id = {p.plot_id: p for p in plots}
        rows = np.zeros((len(buildings), ROW), np.float32)
        n = 0
        for b in buildings:
            p = by_id.get(b.plot_id)
            if p is None:
                continue
            cx, cy = building_centre(p, b.i, b.j)
            r, g, bl = owner_color(p.owner)
            sx, sy, sz = kind_shape(b.kind)
            tall = max(b.height * sz, 0.05)
            rows[n] = (cx, cy, 0.03 * p.cell, b.rotation * math.pi / 2, sx * p.cell, sy * p.cell,
                       tall * p.cell, 0.35, r, g, bl, 1.0, max(1.0, round(tall / 0.3)), 0.6, 0.0, 0.0)
            n += 1
        self.layers["buildings"].set_rows(rows[:n])
        self.layers["roofs"].set_rows(rows[:n])
        self.set_detail(self._detail)

    def set_district_detail(self, houses: bool) -> None:
        """Show the houses around each district, and shadows, only when districts are big
        enough on screen (from afar they are specks that cost as much to draw as a tower)."""
        if houses != self._houses:
            self._houses = houses
            self._sync_districts(self._districts)
            # shadows of districts this small are a pixel or two: not worth their vertices
            (self.shadows.np.show if houses and self.shadows.count else self.shadows.np.hide)()

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
            self.layers["cursor"].set_rows(np.zeros((0, ROW), np.float32))
            return
        cx, cy = building_centre(plot, i, j)
        color = (0.2, 1.0, 0.35, 0.45) if ok else (1.0, 0.15, 0.1, 0.55)
        row = (cx, cy, 0.0, 0.0, plot.cell * 0.98, plot.cell * 0.98, 0.12 * plot.cell, 0.8, *color, 0.0, 0.0, 0.0, 0.0)
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

"""The minimap and the legend, drawn on the pixel overlay in the bottom-right corner.

The minimap is the whole hive from above: a dot per district in the colour of its state
(red a liar, orange the slowest, cyan the asker, gold you), its roads, brighter where
tensors flow, and a marker where the camera looks. `minimap_points` is its pure part.
"""

from __future__ import annotations

import numpy as np

from .frame import DistrictView, RoadView

LIAR, SLOW, ASKER, YOU, PLAIN, DARK = ((1.0, 0.25, 0.2, 1), (1.0, 0.6, 0.15, 1), (0.35, 0.95, 1.0, 1),
                                       (1.0, 0.85, 0.3, 1), (0.85, 0.88, 0.92, 1), (0.4, 0.42, 0.45, 1))

LEGEND = (
    ("out", ">>", "tensor going to a stage"),
    ("back", ">>", "its answer coming back"),
    ("dim", "||", "floors: layers a node serves"),
    ("slow", "[]", "crates: work piling up (slow)"),
    ("gold", "#", "tower lit: replicas agreed"),
    ("liar", "|", "red beacon: liar, slashed"),
    ("hot", "^", "flame: hot  /  battery: low"),
)
LEGEND_COLORS = {"out": (0.3, 0.9, 1.0, 1), "back": (1.0, 0.62, 0.15, 1), "gold": (1.0, 0.85, 0.3, 1),
                 "liar": (1.0, 0.3, 0.25, 1), "hot": (1.0, 0.55, 0.15, 1), "slow": (1.0, 0.6, 0.2, 1),
                 "dim": (0.78, 0.82, 0.88, 1)}


def legend_text(hops_per_chevron: int) -> str:
    n = "1 chevron = 1 hop" if hops_per_chevron == 1 else f"1 chevron = {hops_per_chevron} hops"
    lines = ["HOW TO READ THE CITY"]
    for style, glyph, text in LEGEND:
        lines.append(f"\1leg_{style}\1{glyph}\2  {text}")
    lines.append(f"\1leg_dim\1    ({n}, moving at the hop rate)\2")
    return "\n".join(lines)


def dot_color(d: DistrictView) -> tuple[float, float, float, float]:
    if d.fall > 0:
        return LIAR
    if d.slowest:
        return SLOW
    if d.role == "asker":
        return ASKER
    if d.role == "you":
        return YOU
    return PLAIN if d.online else DARK


def minimap_key(districts: tuple[DistrictView, ...], roads: tuple[RoadView, ...]) -> tuple[object, ...]:
    """What the minimap draws: it is redrawn only when this changes."""
    return (tuple((d.node_id, d.x, d.y, dot_color(d)) for d in districts),
            tuple((r.a, r.b, r.rate_ab + r.rate_ba > 0) for r in roads))


def minimap_points(districts: tuple[DistrictView, ...], size: float, pad: float = 8.0
                   ) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Districts' positions in minimap pixels ``[n, 2]`` (x right, y up, inside a `size`
    square) and the world box it shows (x0, y0, x1, y1)."""
    if not districts:
        return np.zeros((0, 2)), (0.0, 0.0, 1.0, 1.0)
    xy = np.array([(d.x, d.y) for d in districts], np.float64)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    span = float(max((hi - lo).max(), 1e-6))
    centre = (lo + hi) / 2
    box = (centre[0] - span / 2, centre[1] - span / 2, centre[0] + span / 2, centre[1] + span / 2)
    return pad + (xy - (centre - span / 2)) / span * (size - 2 * pad), box


class Minimap:
    """A square map of `size` pixels on `overlay` (pixel units, origin top-left, z up)."""

    def __init__(self, overlay, screen: tuple[int, int], size: float = 180.0, margin: float = 12.0) -> None:
        from panda3d.core import CardMaker

        self.size, self.box = size, (0.0, 0.0, 1.0, 1.0)
        w, h = screen
        self.root = overlay.attach_new_node("minimap")
        self.root.set_bin("fixed", 50)  # over the district labels
        self.root.set_pos(w - margin - size, 0, -(h - margin))  # its bottom-left corner
        card = CardMaker("minimap-card")
        card.set_frame(-4, size + 4, -4, size + 4)
        card.set_color(0.06, 0.08, 0.12, 1)  # opaque: no blending to pay for
        self.root.attach_new_node(card.generate())
        self.map = self.root.attach_new_node("minimap-map")
        self.marker = self.root.attach_new_node("minimap-camera")
        self._marker()

    def _marker(self) -> None:
        from panda3d.core import LineSegs

        segs = LineSegs("camera")
        segs.set_thickness(2.0)
        segs.set_color(1, 1, 1, 1)
        for a, b in (((0, 9), (-6, -6)), ((-6, -6), (6, -6)), ((6, -6), (0, 9))):
            segs.move_to(a[0], 0, a[1])
            segs.draw_to(b[0], 0, b[1])
        self.marker.attach_new_node(segs.create())

    def set_world(self, districts: tuple[DistrictView, ...], roads: tuple[RoadView, ...]) -> None:
        """Redraw dots and roads (call when either changed)."""
        from panda3d.core import LineSegs

        self.map.get_children().detach()
        pts, self.box = minimap_points(districts, self.size)
        where = {d.node_id: pts[k] for k, d in enumerate(districts)}
        segs = LineSegs("roads")
        segs.set_thickness(1.0)  # one-pixel lines: the cheapest a CPU rasteriser draws
        for r in roads:
            if r.a in where and r.b in where:
                busy = r.rate_ab + r.rate_ba > 0
                segs.set_color(*((0.3, 0.9, 1.0, 1) if busy else (0.5, 0.52, 0.55, 1)))
                segs.move_to(where[r.a][0], 0, where[r.a][1])
                segs.draw_to(where[r.b][0], 0, where[r.b][1])
        self.map.attach_new_node(segs.create())
        dots = LineSegs("districts")
        half = 3.5 if len(districts) <= 50 else 1.5  # half a dot's side, pixels
        dots.set_thickness(2 * half)
        for d, (x, y) in zip(districts, pts):
            dots.set_color(*dot_color(d))
            dots.move_to(x - half, 0, y)  # a short thick stroke: a square dot
            dots.draw_to(x + half, 0, y)
        self.map.attach_new_node(dots.create())

    def set_camera(self, x: float, y: float, heading: float) -> None:
        x0, y0, x1, y1 = self.box
        pad = 8.0
        mx = pad + (x - x0) / max(x1 - x0, 1e-9) * (self.size - 2 * pad)
        my = pad + (y - y0) / max(y1 - y0, 1e-9) * (self.size - 2 * pad)
        inside = -4 <= mx <= self.size + 4 and -4 <= my <= self.size + 4
        self.marker.set_pos(min(max(mx, 0.0), self.size), 0, min(max(my, 0.0), self.size))
        self.marker.set_r(-heading)  # the camera looks along its heading (degrees about z)
        self.marker.set_color_scale(1, 1, 1, 1 if inside else 0.4)


class Legend:
    """The key to the picture, above the minimap."""

    def __init__(self, overlay, screen: tuple[int, int], above: float, size_px: float = 12.0,
                 margin: float = 12.0) -> None:
        from panda3d.core import TextNode, TextProperties, TextPropertiesManager, TransparencyAttrib

        manager = TextPropertiesManager.get_global_ptr()
        for name, rgba in LEGEND_COLORS.items():
            props = TextProperties()
            props.set_text_color(*rgba)
            manager.set_properties(f"leg_{name}", props)
        self.screen, self.margin, self.above, self.size_px = screen, margin, above, size_px
        self.text = TextNode("legend")
        self.text.set_align(TextNode.A_left)
        self.text.set_text_color(0.92, 0.94, 0.97, 1)
        self.text.set_card_color(0.06, 0.08, 0.12, 1)
        self.text.set_card_as_margin(0.5, 0.5, 0.3, 0.3)
        self.np = overlay.attach_new_node(self.text)
        self.np.set_bin("fixed", 50)  # over the district labels
        self.np.set_transparency(TransparencyAttrib.M_binary)  # glyphs cut, not blended
        self.np.set_scale(size_px)
        self.hops = 0
        self.set_scale(1)

    def set_scale(self, hops_per_chevron: int) -> None:
        if hops_per_chevron != self.hops:
            self.hops = hops_per_chevron
            self.text.set_text(legend_text(hops_per_chevron))
            w, h = self.screen
            lines = self.text.get_num_rows()
            width = self.text.get_width() * self.size_px
            self.np.set_pos(w - self.margin - width - 0.5 * self.size_px, 0,
                            -(h - self.margin - self.above) + self.size_px * (lines - 0.7))


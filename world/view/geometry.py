"""Geometry made in code: instanced unit boxes and chevrons, road ribbons, the ground, the sky dome.

Instanced layers keep one small mesh and a per-instance array (position, turn, size,
colour) that is rewritten in one copy from numpy, so 5,000 buildings are one draw call.
"""

from __future__ import annotations

import numpy as np
from panda3d.core import (
    Geom,
    GeomLines,
    GeomNode,
    GeomTriangles,
    GeomVertexArrayFormat,
    GeomVertexData,
    GeomVertexFormat,
    GeomVertexWriter,
    InternalName,
    NodePath,
    OmniBoundingVolume,
)

_FACES = (  # normal, then 4 corners counter-clockwise seen from outside
    ((0, 0, 1), ((-1, -1, 1), (1, -1, 1), (1, 1, 1), (-1, 1, 1))),
    ((0, 0, -1), ((-1, 1, 0), (1, 1, 0), (1, -1, 0), (-1, -1, 0))),
    ((1, 0, 0), ((1, -1, 0), (1, 1, 0), (1, 1, 1), (1, -1, 1))),
    ((-1, 0, 0), ((-1, 1, 0), (-1, -1, 0), (-1, -1, 1), (-1, 1, 1))),
    ((0, 1, 0), ((1, 1, 0), (-1, 1, 0), (-1, 1, 1), (1, 1, 1))),
    ((0, -1, 0), ((-1, -1, 0), (1, -1, 0), (1, -1, 1), (-1, -1, 1))),
)


# A flat arrowhead, tip at +x, counter-clockwise seen from above: two triangles of a "V".
CHEVRON = ((0.5, 0.0), (-0.5, 0.5), (-0.15, 0.0), (0.5, 0.0), (-0.15, 0.0), (-0.5, -0.5))


def _instance_format(columns: tuple[str, ...]) -> GeomVertexFormat:
    base = GeomVertexArrayFormat()
    base.add_column(InternalName.get_vertex(), 3, Geom.NT_float32, Geom.C_point)
    inst = GeomVertexArrayFormat()
    for name in columns:
        inst.add_column(InternalName.make(name), 4, Geom.NT_float32, Geom.C_other)
    inst.set_divisor(1)  # advance once per instance, not per vertex
    fmt = GeomVertexFormat()
    fmt.add_array(base)
    fmt.add_array(inst)
    return GeomVertexFormat.register_format(fmt)


class InstancedLayer:
    """A unit box (x, y in -0.5..0.5, z in 0..1) drawn once per row of a float32 array.

    The box shares its 8 corners between faces (normals come from screen-space derivatives
    in the fragment shader), so each instance costs 8 vertex-shader runs, not 24: on a CPU
    rasteriser the vertex work of 5,000 buildings dominates the frame.
    """

    def __init__(self, name: str, columns: tuple[str, ...], parent: NodePath, faces: str = "box") -> None:
        """`faces`: "box" (the five faces seen from above; the bottom never shows), "tile"
        (the top face only: flat markers) or "chevron" (a flat arrowhead pointing along +x)."""
        self.columns = columns
        self.vdata = GeomVertexData(name, _instance_format(columns), Geom.UH_dynamic)
        vw = GeomVertexWriter(self.vdata, "vertex")
        corners: dict[tuple[int, int, int], int] = {}
        tris = GeomTriangles(Geom.UH_static)
        if faces == "chevron":
            for x, y in CHEVRON:
                vw.add_data3(x, y, 0.0)
            for k in range(0, len(CHEVRON), 3):
                tris.add_vertices(k, k + 1, k + 2)
        chosen = [] if faces == "chevron" else (
            [f for f in _FACES if f[0] != (0, 0, -1)] if faces == "box" else _FACES[:1])
        for _normal, quad in chosen:
            ids = []
            for c in quad:
                if c not in corners:
                    corners[c] = len(corners)
                    vw.add_data3(c[0] * 0.5, c[1] * 0.5, float(c[2]))
                ids.append(corners[c])
            tris.add_vertices(ids[0], ids[1], ids[2])
            tris.add_vertices(ids[0], ids[2], ids[3])
        geom = Geom(self.vdata)
        geom.add_primitive(tris)
        node = GeomNode(name)
        node.add_geom(geom)
        # Instances are placed in the shader, so the mesh's own bounds say nothing.
        node.set_bounds(OmniBoundingVolume())
        node.set_final(True)
        self.np = parent.attach_new_node(node)
        self.count = 0
        self.set_rows(np.zeros((0, 4 * len(columns)), np.float32))

    def set_rows(self, rows: np.ndarray) -> None:
        """Replace every instance: `rows` is ``[n, 4 * len(columns)]`` float32."""
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != 4 * len(self.columns):
            raise ValueError(f"instance rows must be [n, {4 * len(self.columns)}], got {rows.shape}")
        n = rows.shape[0]
        array = self.vdata.modify_array(1)
        array.unclean_set_num_rows(max(n, 1))
        if n:
            memoryview(array).cast("B")[: rows.nbytes] = rows.tobytes()
        self.count = n
        self.np.set_instance_count(n)
        if n:
            self.np.show()
        else:
            self.np.hide()


def road_ribbons(name: str, points: np.ndarray, width: float, colors: np.ndarray) -> GeomNode:
    """Flat roads: `points` ``[n, 2, 3]`` centre-line ends, `colors` ``[n, 4]`` (the kerb's).

    Texture coordinate u runs along each road in road widths (for the dashes), v across it
    from 0 to 1 (for the kerbs and lines).
    """
    fmt = GeomVertexFormat.get_v3c4t2()
    vdata = GeomVertexData(name, fmt, Geom.UH_static)
    vdata.unclean_set_num_rows(4 * len(points))
    vw = GeomVertexWriter(vdata, "vertex")
    cw = GeomVertexWriter(vdata, "color")
    tw = GeomVertexWriter(vdata, "texcoord")
    tris = GeomTriangles(Geom.UH_static)
    for k, ((a, b), c) in enumerate(zip(points, colors)):
        d = np.asarray(b[:2], np.float64) - np.asarray(a[:2], np.float64)
        length = float(np.hypot(*d)) or 1e-6
        side = np.array((-d[1], d[0])) / length * (width / 2)
        along = length / max(width, 1e-6)
        for (px, py, pz), sgn, u in ((a, -1, 0.0), (a, 1, 0.0), (b, 1, along), (b, -1, along)):
            vw.set_data3(px + sgn * side[0], py + sgn * side[1], pz)
            cw.set_data4(*c)
            tw.set_data2(u, 0.0 if sgn < 0 else 1.0)
        tris.add_vertices(4 * k, 4 * k + 3, 4 * k + 2)
        tris.add_vertices(4 * k, 4 * k + 2, 4 * k + 1)
    geom = Geom(vdata)
    if len(points):
        geom.add_primitive(tris)
    node = GeomNode(name)
    node.add_geom(geom)
    return node


def grid_lines(name: str, half: float, step: float) -> GeomNode:
    """Lines every `step` units over a square `half` units from the origin each way (z = 0),
    each cut into segments so fog computed per vertex stays smooth."""
    n = max(1, min(int(half // step), 60))
    cuts = 3
    fmt = GeomVertexFormat.get_v3()
    vdata = GeomVertexData(name, fmt, Geom.UH_static)
    vw = GeomVertexWriter(vdata, "vertex")
    lines = GeomLines(Geom.UH_static)
    k = 0
    for i in range(-n, n + 1):
        v = i * step
        for c in range(cuts):
            a, b = -n * step + 2 * n * step * c / cuts, -n * step + 2 * n * step * (c + 1) / cuts
            for p, q in (((v, a), (v, b)), ((a, v), (b, v))):
                vw.add_data3(p[0], p[1], 0.0)
                vw.add_data3(q[0], q[1], 0.0)
                lines.add_vertices(k, k + 1)
                k += 2
    geom = Geom(vdata)
    geom.add_primitive(lines)
    node = GeomNode(name)
    node.add_geom(geom)
    return node


def sky_dome(name: str, radius: float = 1.0, rings: int = 8, segments: int = 16) -> GeomNode:
    """The upper half of a sphere and a skirt 20 degrees below the horizon (seen from inside:
    draw it two-sided); a camera looking down more steeply than that sees none of it."""
    fmt = GeomVertexFormat.get_v3()
    vdata = GeomVertexData(name, fmt, Geom.UH_static)
    vw = GeomVertexWriter(vdata, "vertex")
    lats = [-0.35] + [k / rings * (np.pi / 2) for k in range(rings + 1)]
    for lat in lats:
        for s in range(segments + 1):
            lon = 2 * np.pi * s / segments
            vw.add_data3(radius * np.cos(lat) * np.cos(lon), radius * np.cos(lat) * np.sin(lon),
                         radius * np.sin(lat))
    tris = GeomTriangles(Geom.UH_static)
    for r in range(len(lats) - 1):
        for s in range(segments):
            a, b = r * (segments + 1) + s, (r + 1) * (segments + 1) + s
            tris.add_vertices(a, b, a + 1)
            tris.add_vertices(a + 1, b, b + 1)
    geom = Geom(vdata)
    geom.add_primitive(tris)
    node = GeomNode(name)
    node.add_geom(geom)
    return node

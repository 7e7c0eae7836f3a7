"""Geometry made in code: instanced unit boxes, pulse quads, road lines, the ground plane.

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
        """`faces`: "box" (the five faces seen from above; the bottom never shows) or "tile"
        (the top face only: flat markers)."""
        self.columns = columns
        self.vdata = GeomVertexData(name, _instance_format(columns), Geom.UH_dynamic)
        vw = GeomVertexWriter(self.vdata, "vertex")
        corners: dict[tuple[int, int, int], int] = {}
        tris = GeomTriangles(Geom.UH_static)
        chosen = [f for f in _FACES if f[0] != (0, 0, -1)] if faces == "box" else _FACES[:1]
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


def road_lines(name: str, points: np.ndarray, colors: np.ndarray) -> GeomNode:
    """Line segments: `points` ``[n, 2, 3]`` endpoints, `colors` ``[n, 4]`` per road."""
    fmt = GeomVertexFormat.get_v3c4()
    vdata = GeomVertexData(name, fmt, Geom.UH_static)
    vdata.unclean_set_num_rows(2 * len(points))
    vw = GeomVertexWriter(vdata, "vertex")
    cw = GeomVertexWriter(vdata, "color")
    lines = GeomLines(Geom.UH_static)
    for k, ((a, b), c) in enumerate(zip(points, colors)):
        vw.set_data3(*a)
        vw.set_data3(*b)
        cw.set_data4(*c)
        cw.set_data4(*c)
        lines.add_vertices(2 * k, 2 * k + 1)
    geom = Geom(vdata)
    if len(points):
        geom.add_primitive(lines)
    node = GeomNode(name)
    node.add_geom(geom)
    return node


def grid_lines(name: str, half: float, step: float) -> GeomNode:
    """Lines every `step` units over a square `half` units from the origin each way (z = 0)."""
    n = max(1, min(int(half // step), 200))
    fmt = GeomVertexFormat.get_v3()
    vdata = GeomVertexData(name, fmt, Geom.UH_static)
    vw = GeomVertexWriter(vdata, "vertex")
    lines = GeomLines(Geom.UH_static)
    k = 0
    for i in range(-n, n + 1):
        v = i * step
        for a, b in (((v, -n * step), (v, n * step)), ((-n * step, v), (n * step, v))):
            vw.add_data3(a[0], a[1], 0.0)
            vw.add_data3(b[0], b[1], 0.0)
            lines.add_vertices(k, k + 1)
            k += 2
    geom = Geom(vdata)
    geom.add_primitive(lines)
    node = GeomNode(name)
    node.add_geom(geom)
    return node

"""The Panda3D app: a `ShowBase` stepped by an asyncio task, so mesh, CRDT sync and rendering
share one loop (compute runs in worker threads). Config is applied before `ShowBase`."""

from __future__ import annotations

import asyncio
import gc
import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from .camera import CameraState, framing, orbit, track
from .config import ViewConfig, apply_config, gl_finish
from .editor import Editor
from .frame import ComputeGate, EditableCity, WorldFrame, WorldSource
from .modes import Modes
from .overlay import minimap_key

DETAIL_PIXELS = 6.0  # a building cell smaller than this on screen is drawn as its roof only
HOUSE_PIXELS = 24.0  # districts spaced closer than this on screen are drawn without their houses
ORBIT_KEYS = {"a": "left", "d": "right", "w": "up", "s": "down", "q": "zoom_in", "e": "zoom_out",
              "j": "pan_left", "l": "pan_right", "i": "pan_up", "k": "pan_down"}


def follow_target(frame: WorldFrame, now: float) -> str | None:
    """The district the tensor flow is at: where the latest pulse sent by `now` is going,
    else the first active district."""
    sent = [p for p in frame.pulses if p.start <= now]
    if sent:
        return max(sent, key=lambda p: p.start).dst
    return next((d.node_id for d in frame.districts if d.active), None)


class WorldApp:
    """One window (or offscreen buffer) showing a `WorldSource`, in one of the modes."""

    def __init__(self, cfg: ViewConfig, source: WorldSource, *, mode: str = "play",
                 editor: Editor | None = None, city: EditableCity | None = None, on_prompt: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, gate: ComputeGate | None = None) -> None:
        """`gate`: the hosted hive's frame gate (`hive_core.exec.frame_gate`), held while each
        frame renders so that its compute runs between frames."""
        apply_config(cfg)
        from direct.showbase.ShowBase import ShowBase

        from .hud import Hud
        from .scene import Scene

        self.cfg = cfg
        self.base = ShowBase(windowType="offscreen" if cfg.offscreen else None)
        if self.base.win is None:
            raise RuntimeError("could not open a window; try --offscreen")
        self.base.disableMouse()
        from .scene import GROUND

        self.base.setBackgroundColor(*GROUND, 1)  # the land (the sky is a dome drawn over it)
        # The 2D overlay neither tests nor writes depth: clearing it again costs a CPU
        # rasteriser a pass over every tile of the frame.
        self.base.cam2d.node().get_display_region(0).set_clear_depth_active(False)
        self._finish = gl_finish() if cfg.finish else None
        self.base.camLens.set_fov(40.0 * cfg.width / cfg.height, 40.0)
        self.base.camLens.set_near_far(0.5, 1e5)
        self.source = source
        self.editor = editor
        self.city = editor.city if editor is not None else city  # plots and buildings come from here
        self.clock = clock
        self.gate = gate
        self.scene = Scene(self.base.render)
        self.hud = Hud({"top_left": self.base.a2dTopLeft, "top_right": self.base.a2dTopRight,
                        "bottom_left": self.base.a2dBottomLeft}, on_prompt=on_prompt)
        from .labels import Labels
        from .overlay import Legend, Minimap

        screen, scale = (cfg.width, cfg.height), cfg.height / 720.0  # overlays sized for 720 rows
        self.labels = Labels(self.base.pixel2d, size_px=max(7.0, 13.0 * scale))
        self.minimap = Minimap(self.base.pixel2d, screen, size=180.0 * scale, margin=12.0 * scale)
        self.legend = Legend(self.base.pixel2d, screen, above=self.minimap.size + 14 * scale,
                             size_px=12.0 * scale, margin=12.0 * scale)
        self.small = cfg.height < 400  # too small for text over the city: no labels, no legend
        if self.small:
            self.legend.np.hide()
        self._mapped: tuple[object, object, object] | None = None
        self.camera = CameraState()
        self.follow = False
        self.pointer: tuple[float, float] | None = None  # synthetic mouse, NDC; else the real one
        self.closed = False
        self.frame: WorldFrame = WorldFrame()
        self.frames = 0
        self._framed = -1
        self._last = clock()
        self._intent: dict[str, bool] = {}
        for key, action in ORBIT_KEYS.items():
            self.base.accept(key, self._intent.__setitem__, [action, True])
            self.base.accept(f"{key}-up", self._intent.__setitem__, [action, False])
        if hasattr(self.base.win, "set_close_request_event"):  # windows only, not buffers
            self.base.win.set_close_request_event("cadencia-close")
            self.base.accept("cadencia-close", self.close)
        self.modes = Modes(self)
        self.modes.switch(mode)

    # -- the loop -----------------------------------------------------------------------

    def step(self) -> None:
        """Read the model, update the scene, HUD and camera, render one frame (holding the
        frame gate, if any, meanwhile)."""
        collecting = gc.isenabled()
        gc.disable()  # Python's cycle collector runs between frames (the hive's heap is big), not in one
        try:
            if self.gate is None:
                self._step()
                return
            with self.gate.holding():
                self._step()
        finally:
            if collecting:
                gc.enable()

    def _step(self) -> None:
        now = self.clock()
        dt = min(max(now - self._last, 0.0), 0.25)
        self._last = now
        frame = self.source.frame(now)
        if self.city is not None:
            frame = replace(frame, plots=tuple(self.city.plots()), buildings=tuple(self.city.buildings()))
        self.frame = frame
        self.scene.sync(frame, now)
        self._update_camera(frame, dt)
        self._update_overlay(frame)
        message, refused = "", False
        if self.editor is not None and self.modes.name == "edit":
            self._hover()
            message, refused = self.editor.message, self.editor.refused
        elif frame.hud.refused:  # a choice refused: its reason stays in red until the next one
            message, refused = frame.hud.refused, True
        self.hud.show(frame.hud, self.modes.name, message, refused)
        self.base.taskMgr.step()
        if self._finish is not None:
            self._finish()
        self.frames += 1

    async def run(self, frames: int | None = None, fps: float = 60.0) -> int:
        """Step until closed (or `frames` frames), yielding to the event loop between frames."""
        period = 1.0 / fps if fps > 0 else 0.0
        start = self.frames
        while not self.closed and (frames is None or self.frames - start < frames):
            t0 = time.perf_counter()
            self.step()
            await asyncio.sleep(max(0.0, period - (time.perf_counter() - t0)))
        return self.frames - start

    def close(self) -> None:
        self.closed = True

    def destroy(self) -> None:
        self.closed = True
        self.base.destroy()

    # -- camera and picking -------------------------------------------------------------

    def _update_overlay(self, frame: WorldFrame) -> None:
        """Labels follow their districts; the minimap redraws when the hive changes."""
        lay, unit = self.scene.layout, self.scene.layout.unit

        def anchor(node_id: str) -> tuple[float, float] | None:
            if node_id not in lay.index:
                return None
            x, y, h = lay.top(node_id)
            return self.project(x, y, h + 0.35 * unit)

        if not self.small:
            self.labels.update(frame.districts, anchor)
        if self._mapped is None or self._mapped[0] is not frame.districts or self._mapped[1] is not frame.roads:
            key = minimap_key(frame.districts, frame.roads)
            if self._mapped is None or self._mapped[2] != key:  # only what the minimap shows
                self.minimap.set_world(frame.districts, frame.roads)
            self._mapped = (frame.districts, frame.roads, key)
        self.minimap.set_camera(self.camera.x, self.camera.y, self.camera.heading)
        self.legend.set_scale(self.scene.hops_per_chevron)

    def _update_camera(self, frame: WorldFrame, dt: float) -> None:
        lay = self.scene.layout
        if self._framed != len(frame.districts) and self.modes.name != "edit":
            self._framed = len(frame.districts)
            # the whole of every district in view (not only its centre), and room for labels
            reach = np.concatenate([lay.footprint * 1.3, lay.footprint * 1.3])
            xs = np.concatenate([lay.xy[:, 0] - reach[: len(lay.xy)], lay.xy[:, 0] + reach[len(lay.xy):]])
            ys = np.concatenate([lay.xy[:, 1] - reach[: len(lay.xy)], lay.xy[:, 1] + reach[len(lay.xy):]])
            self.camera = framing(list(xs), list(ys))
        if self.follow:
            target = follow_target(frame, self.clock())
            if target is not None and target in lay.index:
                x, y, _ = lay.top(target)
                self.camera = track(self.camera, x, y, dt)
        elif not self.hud.typing:  # keys typed into the prompt box do not fly the camera
            self.camera = orbit(self.camera, self._intent, dt)
        self.base.camera.set_pos(*self.camera.eye())
        self.base.camera.look_at(self.camera.x, self.camera.y, 0.0)
        self.scene.set_view(self.camera.eye(), self.camera.distance,
                            self.camera.pitch - self.base.camLens.get_fov()[1] / 2)
        cell = min((p.cell for p in frame.plots), default=1.0)
        self.scene.set_detail(cell * self.pixels_per_unit() >= DETAIL_PIXELS)
        self.scene.set_district_detail(lay.unit * self.pixels_per_unit() >= HOUSE_PIXELS)

    def pixels_per_unit(self) -> float:
        """Screen pixels per world unit at the camera's target distance."""
        fov = math.radians(self.base.camLens.get_fov()[1])
        return self.cfg.height / (2.0 * math.tan(fov / 2.0) * max(self.camera.distance, 1e-6))

    def focus_own_plot(self) -> None:
        plot = self.editor.own_plot() if self.editor else None
        if plot is not None:
            self._framed = len(self.frame.districts)
            xs = [plot.x - plot.cell, plot.x + (plot.width + 1) * plot.cell]
            ys = [plot.y - plot.cell, plot.y + (plot.depth + 1) * plot.cell]
            self.camera = framing(xs, ys, pitch=60.0)

    def pointer_ndc(self) -> tuple[float, float] | None:
        if self.pointer is not None:
            return self.pointer
        watcher = self.base.mouseWatcherNode
        if watcher is not None and watcher.has_mouse():
            m = watcher.get_mouse()
            return (m.x, m.y)
        return None

    def pick(self, ndc: tuple[float, float]) -> tuple[float, float] | None:
        """The ground point (z = 0) under a point of the view (NDC, -1..1); None above the horizon."""
        from panda3d.core import Plane, Point2, Point3, Vec3

        near, far = Point3(), Point3()
        if not self.base.camLens.extrude(Point2(*ndc), near, far):
            return None
        render, cam = self.base.render, self.base.cam
        near, far = render.get_relative_point(cam, near), render.get_relative_point(cam, far)
        hit = Point3()
        if not Plane(Vec3(0, 0, 1), Point3(0, 0, 0)).intersects_line(hit, near, far):
            return None
        return (hit.x, hit.y)

    def project(self, x: float, y: float, z: float = 0.0) -> tuple[float, float] | None:
        """Pixel (column, row from the top) where world point (x, y, z) lands; None off screen."""
        from panda3d.core import Point2, Point3

        p = self.base.cam.get_relative_point(self.base.render, Point3(x, y, z))
        film = Point2()
        if not self.base.camLens.project(p, film):
            return None
        return ((film.x + 1) / 2 * self.cfg.width, (1 - film.y) / 2 * self.cfg.height)

    def pixel_ndc(self, col: float, row: float) -> tuple[float, float]:
        return (col / self.cfg.width * 2 - 1, 1 - row / self.cfg.height * 2)

    # -- editing --------------------------------------------------------------------------

    def _hover(self) -> None:
        assert self.editor is not None
        ndc = self.pointer_ndc()
        point = self.pick(ndc) if ndc is not None else None
        cell = self.editor.hover_at(*point) if point is not None else None
        if cell is None:
            self.scene.show_cursor(None)
        else:
            self.scene.show_cursor(cell.plot, cell.i, cell.j, ok=self.editor.hover_ok())

    def click(self) -> None:
        ndc = self.pointer_ndc()
        point = self.pick(ndc) if ndc is not None else None
        if self.editor is not None and point is not None:
            self.editor.click(*point)

    def edit_key(self, key: str) -> None:
        if self.editor is not None:
            self.editor.key(key)

    # -- output ---------------------------------------------------------------------------

    def pixels(self) -> np.ndarray:
        """The last rendered frame as ``[height, width, 3]`` uint8, row 0 at the top."""
        tex = self.base.win.get_screenshot()
        if tex is None:
            raise RuntimeError("no frame rendered yet")
        data = np.frombuffer(bytes(tex.get_ram_image_as("RGB")), np.uint8)
        return data.reshape(tex.get_y_size(), tex.get_x_size(), 3)[::-1]

    def screenshot(self, path: str | Path) -> Path:
        """Save the last frame as PNG at `path` (folders created)."""
        from panda3d.core import Filename

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.base.win.save_screenshot(Filename.from_os_specific(str(path))):
            raise OSError(f"could not write screenshot {path}")
        return path

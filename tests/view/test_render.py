"""Offscreen renders (Panda3D EGL on Mesa): the picture shows what the model holds."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace

import numpy as np

from cadencia.game.session import game_source
from cadencia.game.synthetic import SyntheticWorld
from hive_core.model.kv.factory import kv_factory
from world.view.city_view import CityView
from world.view.editor import Editor
from world.view.frame import BuildingView, DistrictView, PlotView, PulseView, WorldFrame
from world.view.scene import building_centre, pulse_position


class Clock:
    """A clock the test moves by hand, so shader animation is deterministic."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def at(px: np.ndarray, point: tuple[float, float] | None) -> np.ndarray:
    assert point is not None, "the point is off screen"
    col, row = round(point[0]), round(point[1])
    return px[row, col].astype(int)


def bright(rgb: np.ndarray) -> bool:
    return int(rgb.max()) > 90


DISTRICTS = tuple(DistrictView(f"n{k}", x, y, tflops=2.0) for k, (x, y) in
                  enumerate([(0.0, 0.0), (60.0, 0.0), (0.0, 60.0), (60.0, 60.0), (30.0, 30.0)]))


def test_districts_stand_at_their_projected_map_positions(make_app):
    world = SyntheticWorld(WorldFrame(DISTRICTS))
    app = make_app(world, mode="spectate")
    app.step()
    app.step()
    px = app.pixels()
    lay = app.scene.layout
    for d in DISTRICTS:
        x, y, h = lay.top(d.node_id)
        rgb = at(px, app.project(x, y, h * 0.5))
        assert bright(rgb), (d.node_id, rgb)  # a lit facade
    # Between districts there is only dark ground.
    assert not bright(at(px, app.project(30.0, 0.0, 0.0)))
    # Move one district in the model: the picture follows, nothing is left behind.
    moved = (*DISTRICTS[:4], DistrictView("n4", 30.0, 0.0, tflops=2.0))
    world.__init__(WorldFrame(moved))  # type: ignore[misc]  # the source now says something else
    app.step()
    app.step()
    px2 = app.pixels()
    x, y, h = app.scene.layout.top("n4")
    assert bright(at(px2, app.project(x, y, h * 0.5)))
    assert not bright(at(px2, app.project(30.0, 30.0, 0.0)))


def test_pulse_flies_along_the_road_by_the_clock(make_app):
    clock = Clock()
    a, b = DISTRICTS[0], DISTRICTS[3]
    frame = WorldFrame(DISTRICTS, pulses=(PulseView(a.node_id, b.node_id, start=1.0, duration=2.0),))
    app = make_app(SyntheticWorld(frame), mode="spectate", clock=clock)
    scene = app.scene
    # Mid-hop it is half way along; after landing, that spot is empty again.
    for now, expect in ((2.0, True), (3.5, False)):
        clock.now = now
        app.step()
        app.step()
        t = 0.5
        p = pulse_position(scene.pulse_end(a.node_id), scene.pulse_end(b.node_id), t, scene.layout.unit)
        rgb = at(app.pixels(), app.project(*p))
        is_pulse = bright(rgb) and rgb[1] > 150 and rgb[2] > 150 and rgb[0] < rgb[1]
        assert is_pulse == expect, (now, rgb)


def test_pulses_in_flight_during_a_real_ask(make_app, tiny_gguf):
    """hive_core.exec's in-process hive (sealed hops over authenticated mesh links, replicas,
    a referee, one cheating replica) drives the picture through the game state: while it
    answers, frames show pulses where the shader puts them; afterwards towers stood, the
    cheater's district fell, receipts raised credit buildings."""
    from cadencia.game.hive_link import EmbeddedHive
    from hive_core.exec.hive import identity
    from hive_core.model.gguf_file import GGUFModelFile
    from hive_core.model.pipeline import LocalPipeline

    file = GGUFModelFile(tiny_gguf)
    source = game_source(slow_motion=40.0)
    hive = EmbeddedHive(source)
    app = make_app(source, mode="spectate", gate=hive.gate)  # the hive computes between frames
    seen: list[np.ndarray] = []

    async def main():
        await hive.start(file=file, link_ms=2.0)
        try:
            task = asyncio.create_task(hive.ask("hi", max_new_tokens=3))
            while not task.done():
                app.step()
                now = app.clock()
                live = [p for p in app.frame.pulses if p.start + 0.1 * p.duration < now < p.start + 0.9 * p.duration]
                if live:
                    px, sc = app.pixels(), app.scene
                    for p in live:
                        t = (now - p.start) / p.duration
                        where = pulse_position(sc.pulse_end(p.src), sc.pulse_end(p.dst), t, sc.layout.unit)
                        seen.append(at(px, app.project(*where)))
                await asyncio.sleep(0.005)
            return task.result()
        finally:
            await hive.close()

    result = asyncio.run(asyncio.wait_for(main(), 120))
    assert seen, "no frame caught a pulse in flight"
    # Cyan by hue: green and blue well above red. Some samples are dim but keep the hue
    # (e.g. (30, 66, 77)); the night background is near black.
    cyan = [rgb for rgb in seen if min(rgb[1], rgb[2]) > 1.5 * rgb[0] and rgb[1] + rgb[2] > 100]
    assert len(cyan) >= 0.8 * len(seen), seen
    cheater = identity("server-1").node_id.hex()
    assert result.slashed == (cheater,) and result.verified
    # The hive's answer is the model's: the same tokens as the single-process pipeline.
    from hive_core.model.modes import DEFAULT_WEIGHTS  # what the game's hive runs

    session = LocalPipeline.load_single(file, weights=DEFAULT_WEIGHTS).new_session(kv_factory("fp32"))
    logits, want = session.forward(hive.prompt_ids("hi")), []
    for _ in range(len(result.new_ids)):
        want.append(int(logits.argmax()))
        logits = session.forward([want[-1]])
    assert result.new_ids == want
    frame = source.frame(app.clock() + 5.0)  # after the fall and the rise animations
    assert next(d for d in frame.districts if d.node_id == cheater).fall == 1.0
    assert any(d.floors > 0 for d in frame.districts) or all(r.reward_mc() < 1000 for r in result.receipts)
    assert sum(source.state.credits_mc(bytes.fromhex(d.node_id)) for d in frame.districts) == \
        sum(r.reward_mc() for r in result.receipts)


def test_each_frame_holds_the_hosted_hives_gate(make_app):
    """While a frame is read, synced and rendered, hosted compute is held back; between
    frames it is not."""
    from hive_core.exec.frame_gate import FrameGate

    gate = FrameGate()
    held: list[bool] = []

    class Watched:
        def frame(self, now: float) -> WorldFrame:
            held.append(gate.held)
            return WorldFrame()

    app = make_app(Watched(), mode="spectate", gate=gate)
    app.step()
    app.step()
    assert held == [True, True] and not gate.held
    gate.close()


def test_editor_input_changes_doc_and_picture_and_undo_restores_both(make_app, cities):
    alice, _bob = cities
    view = CityView(alice)
    editor = Editor(view, view.player)
    app = make_app(game_source(), mode="edit", editor=editor)
    mine = next(p for p in view.plots() if p.owner == view.player)
    app.step()
    app.step()
    cx, cy = building_centre(mine, 3, 3)
    col, row = app.project(cx, cy, 0.0)
    app.pointer = app.pixel_ndc(col, row)
    app.step()
    c0, r0 = int(col), int(row)

    def crop() -> np.ndarray:
        return app.pixels()[max(r0 - 25, 0): r0 + 10, max(c0 - 15, 0): c0 + 15].astype(int)

    before = crop()
    app.base.messenger.send("mouse1")
    app.step()
    app.step()
    assert [(b.i, b.j) for b in view.buildings()] == [(3, 3)]
    assert len(alice.buildings()) == 1
    built = crop()
    assert np.abs(built - before).mean() > 8.0  # a building stands there now
    app.base.messenger.send("z")
    app.step()
    app.step()
    assert view.buildings() == () and alice.buildings() == {}
    assert np.abs(crop() - before).mean() < 1.0  # and the picture is as before
    app.base.messenger.send("y")
    app.step()
    assert len(view.buildings()) == 1


def test_refused_edit_shows_a_red_cursor_and_changes_nothing(make_app, cities):
    alice, _bob = cities
    view = CityView(alice)
    editor = Editor(view, view.player)
    app = make_app(game_source(), mode="edit", editor=editor)
    theirs = next(p for p in view.plots() if p.owner != view.player)
    app.step()
    # Look at the neighbour's cell (edit mode frames one's own plot, and a small view may
    # leave the neighbour's out): it lands mid-screen, so the check below always runs.
    target = building_centre(theirs, 1, 1)
    app.camera = replace(app.camera, x=target[0], y=target[1])
    app.step()
    point = app.project(*target, 0.0)
    assert point is not None and abs(point[0] - 160) < 2 and abs(point[1] - 120) < 2, point
    app.pointer = app.pixel_ndc(*point)
    app.step()
    app.base.messenger.send("mouse1")
    app.step()
    app.step()
    assert editor.refused and "belongs to player" in editor.message
    assert view.buildings() == ()
    rgb = at(app.pixels(), point)
    assert rgb[0] > rgb[1] + 30 and rgb[0] > rgb[2] + 30, rgb


def test_thousands_of_instances_render(make_app):
    rng = np.random.default_rng(1)
    xy = rng.uniform(-300, 300, size=(2000, 2))
    districts = tuple(DistrictView(f"n{k}", float(x), float(y)) for k, (x, y) in enumerate(xy))
    plots = tuple(PlotView(f"p{k}", f"o{k % 5}", -300 + 12.0 * (k % 50), 320 + 12.0 * (k // 50), 10, 10)
                  for k in range(50))
    buildings = tuple(BuildingView(f"b{k}", f"p{k // 100}", k % 10, (k // 10) % 10, k % 4, "house", 2.0)
                      for k in range(5000))
    app = make_app(SyntheticWorld(WorldFrame(districts, plots=plots, buildings=buildings)), mode="spectate")
    app.step()
    app.step()
    # each district: its main building (its plaza is a tile; from this far, no houses)
    assert app.scene.layers["districts"].count == 2000 and app.scene.plazas.count == 2000
    assert not app.scene._houses
    assert app.scene.layers["buildings"].count == 5000
    assert app.scene.layers["plots"].count == 5000
    lit = (app.pixels().max(axis=2) > 90).mean()
    assert lit > 0.05
    layers = app.scene.layers
    # From afar a cell is a few pixels: roofs and slabs stand in for walls and tiles.
    assert layers["roofs"].np.is_hidden() is False and layers["buildings"].np.is_hidden()
    assert layers["slabs"].np.is_hidden() is False and layers["plots"].np.is_hidden()
    from dataclasses import replace
    app.camera = replace(app.camera, x=-295.0, y=325.0, distance=15.0)  # close over the first plot
    app.step()
    assert layers["buildings"].np.is_hidden() is False and layers["roofs"].np.is_hidden()
    assert layers["plots"].np.is_hidden() is False


def test_prompt_box_asks_the_hive_and_typing_does_not_fly_the_camera(make_app):
    asked: list[str] = []
    app = make_app(SyntheticWorld(WorldFrame(DISTRICTS)), mode="play", on_prompt=asked.append)
    app.step()
    heading = app.camera.heading
    app.hud._focus()  # the player clicked into the prompt box
    app.base.messenger.send("a")  # 'a' turns the camera, except while typing
    app.step()
    app.step()
    assert app.camera.heading == heading
    app.hud._submit("  what is a hive?  ")
    assert asked == ["what is a hive?"] and not app.hud.typing
    app.step()
    app.step()
    assert app.camera.heading != heading  # 'a' is still held: now it turns
    app.base.messenger.send("a-up")
    app.hud._submit("   ")
    assert asked == ["what is a hive?"]  # blank prompts are not sent


def test_a_long_answer_grows_upwards_clear_of_the_refusal_line(make_app):
    """A five-line answer and a refusal on screen at once: the answer's last line stays above
    the red message, so neither covers the other."""
    hud = replace(WorldFrame(DISTRICTS).hud, answer="word " * 80, refused="refused: too little credit")
    app = make_app(SyntheticWorld(WorldFrame(DISTRICTS, hud=hud)), mode="play")
    app.step()
    answer, message = app.hud.answer, app.hud.message
    assert answer.getText().count("\n") == 4 and message.getText().startswith("refused")
    (_, _, answer_bottom), _ = answer.getTightBounds(app.hud.message.getParent())
    _, (_, _, message_top) = message.getTightBounds(app.hud.message.getParent())
    assert answer_bottom > message_top


def test_a_frame_flushes_the_city_once_and_finishes_once(monkeypatch):
    """The city is drawn tall layers first with one glFlush after them (the rasteriser's
    threads start while the rest is submitted); a measured frame ends in one glFinish, not
    one per draw call as Panda's own `gl-finish` does; the 2D overlay clears no depth."""
    from world.view import config
    from world.view.app import WorldApp
    from world.view.config import ViewConfig, prc_text
    from world.view.scene import DRAW_ORDER, WORLD_BIN

    calls: list[str] = []
    real = config.gl_entry

    def counted(name: str):
        fn = real(name)
        assert fn is not None, f"no {name} in this libGL"
        return lambda: (calls.append(name), fn())[1]

    monkeypatch.setattr(config, "gl_entry", counted)
    cfg = ViewConfig(320, 240, offscreen=True, finish=True)
    assert "gl-finish" not in prc_text(cfg)
    app = WorldApp(cfg, SyntheticWorld(WorldFrame(DISTRICTS)), mode="spectate")
    try:
        app.step()
        app.step()
        assert calls == ["glFlush", "glFinish"] * 2
        assert not app.base.cam2d.node().get_display_region(0).get_clear_depth_active()
        drawn = sorted((c.get_bin_draw_order(), c.get_name()) for c in app.scene.root.get_children()
                       if c.get_bin_name() == WORLD_BIN)
        assert [name for _, name in drawn] == list(DRAW_ORDER)
    finally:
        app.destroy()


def test_software_rendering_gets_one_thread_more_than_the_cores_unless_told(monkeypatch):
    from world.view.config import ViewConfig, apply_config

    monkeypatch.delenv("LP_NUM_THREADS", raising=False)
    apply_config(ViewConfig(320, 240, offscreen=True))
    assert os.environ["LP_NUM_THREADS"] == str((os.cpu_count() or 1) + 1)
    monkeypatch.setenv("LP_NUM_THREADS", "1")  # the user's choice stands
    apply_config(ViewConfig(320, 240, offscreen=True))
    assert os.environ["LP_NUM_THREADS"] == "1"


def test_the_cycle_collector_waits_for_the_frame_to_end(make_app):
    import gc

    seen: list[bool] = []

    class Watched:
        def frame(self, now: float) -> WorldFrame:
            seen.append(gc.isenabled())
            return WorldFrame()

    app = make_app(Watched(), mode="spectate")
    assert gc.isenabled()
    app.step()
    assert seen == [False] and gc.isenabled()
    gc.disable()  # a program that keeps it off keeps it off
    try:
        app.step()
        assert not gc.isenabled()
    finally:
        gc.enable()

"""The view's pure parts: colours, camera, editor on the real city, scripts, URLs, shaders."""

from __future__ import annotations

import math

import pytest

from cadencia.game.runner import check_hive_url
from world.game.snapshot import GameSnapshot, SessionSnapshot
from world.view.camera import CameraState, framing, orbit, track
from world.view.city_view import CityView
from world.view.editor import Editor, cell_at
from world.view.frame import EditRefused, PlotView, ViewError
from world.view.game_source import _latest_rate
from world.view.palette import district_light, rtt_color
from world.view.script import Step, parse_script
from world.view.shaders import shader_paths


def test_rtt_colour_runs_green_to_red():
    fast, mid, slow = rtt_color(5), rtt_color(50), rtt_color(400)
    assert fast[1] == 1.0 and fast[0] == 0.0
    assert slow[0] == 1.0 and slow[1] == 0.0
    assert 0.0 < mid[0] <= 1.0 and 0.0 < mid[1] <= 1.0


def test_lights_dim_with_heat_and_idleness():
    assert district_light(1.0, 1.0, True) > district_light(1.0, 0.4, True) > district_light(1.0, 0.4, False)


def test_camera_framing_orbit_and_tracking():
    cam = framing([0.0, 100.0], [0.0, 0.0])
    assert (cam.x, cam.y) == (50.0, 0.0)
    assert cam.distance > 50.0
    eye = CameraState(0, 0, 10, heading=0, pitch=90).eye()
    assert eye == pytest.approx((0, 0, 10), abs=1e-9)
    turned = orbit(cam, {"right": True}, 0.5)
    assert turned.heading == pytest.approx((cam.heading + 30.0) % 360)
    followed = cam
    for _ in range(120):
        followed = track(followed, 10.0, 20.0, 1 / 60)
    assert math.hypot(followed.x - 10.0, followed.y - 20.0) < 1.0


def test_cell_at_snaps_to_grid():
    plot = PlotView("p", "me", 2.0, 3.0, 4, 4, 1.0)
    assert cell_at([plot], 2.01, 3.99).j == 0
    c = cell_at([plot], 5.9, 6.9)
    assert (c.i, c.j) == (3, 3)
    assert cell_at([plot], 6.1, 4.0) is None


def test_editor_commands_change_the_city_and_undo_restores(cities):
    alice, bob = cities
    view = CityView(alice)
    ed = Editor(view, view.player)
    ed.click(1.5, 2.5)  # empty cell of her plot: build
    assert not ed.refused, ed.message
    (b,) = view.buildings()
    assert (b.i, b.j, b.rotation, b.kind) == (1, 2, 0, "house")
    assert len(bob.buildings()) == 1  # the signed edit reached the other replica
    ed.key("arrow_right")
    ed.key("r")
    (b,) = view.buildings()
    assert (b.i, b.j, b.rotation) == (2, 2, 1)
    x, y, _ = alice.building(b.building_id).position
    assert (x, y) == (2.5, 2.5)  # snapped to the cell's centre in the doc
    ed.key("z")
    ed.key("z")
    assert [(v.i, v.j, v.rotation) for v in view.buildings()] == [(1, 2, 0)]
    ed.key("y")
    assert [(v.i, v.j) for v in view.buildings()] == [(2, 2)]
    ed.key("delete")
    assert view.buildings() == () and bob.buildings() == {}
    ed.key("z")
    assert len(view.buildings()) == 1


def test_clicking_an_empty_cell_after_building_builds_a_second_one(cities):
    """As the help says: a click on an empty cell builds there, even with a building selected
    (it used to move the selection instead)."""
    alice, _bob = cities
    view = CityView(alice)
    ed = Editor(view, view.player)
    ed.click(1.5, 1.5)
    first = ed.selected
    ed.click(4.5, 3.5)
    assert not ed.refused and ed.message == "placed a house at (4, 3)"
    assert sorted((b.i, b.j) for b in view.buildings()) == [(1, 1), (4, 3)]
    assert ed.selected != first  # the new one is selected: arrows move it, not the first
    ed.key("arrow_up")
    assert sorted((b.i, b.j) for b in view.buildings()) == [(1, 1), (4, 4)]


def test_editor_refuses_visibly(cities):
    alice, bob = cities
    view = CityView(alice)
    ed = Editor(view, view.player)
    ed.click(12.5, 1.5)  # Bob's plot
    assert ed.refused and ed.message.startswith("refused: plot") and "belongs to player" in ed.message
    assert view.buildings() == ()
    ed.click(30.0, 30.0)
    assert ed.refused and "not on any plot" in ed.message
    ed.click(0.5, 0.5)
    ed.key("escape")
    ed.click(0.5, 0.5)  # selects the building there, does not stack a second one
    assert len(view.buildings()) == 1 and not ed.refused
    ed.key("arrow_left")  # off the plot
    assert ed.refused and "off plot" in ed.message
    with pytest.raises(EditRefused, match="own player"):
        view.place(bob.player_id, view.plots()[0].plot_id, 0, 0, 0, "house")
    # Bob's building, seen from Alice's replica, can be selected but not changed.
    bob_view = CityView(bob)
    bob_plot = next(p for p in bob_view.plots() if p.owner == bob.player_id)
    bob_building = bob_view.place(bob.player_id, bob_plot.plot_id, 0, 0, 0, "tower")
    ed.key("escape")
    ed.click(10.5, 0.5)
    assert not ed.refused
    ed.key("delete")
    assert ed.refused and bob_building in bob.buildings() and bob_building in alice.buildings()


def test_script_parsing():
    assert parse_script("click 1 2; key r; click theirs 0 3") == [
        Step("click", "mine", 1, 2), Step("key", key="r"), Step("click", "theirs", 0, 3)]
    for bad in ("jump 1 2", "click 1", "key launch", "click mine x 2"):
        with pytest.raises(ViewError, match="bad script step"):
            parse_script(bad)


def test_hive_url_must_be_loopback_ws():
    assert check_hive_url("ws://127.0.0.1:8765") == "ws://127.0.0.1:8765"
    for bad in ("http://127.0.0.1:1", "ws://10.0.0.1:80", "ws://127.0.0.1", "127.0.0.1:80"):
        with pytest.raises(ViewError):
            check_hive_url(bad)


def test_shaders_exist_and_names_are_checked(tmp_path):
    for name in ("instanced", "pulse", "road"):
        vert, _frag = shader_paths(name)
        assert vert.read_text().startswith("#version")
    with pytest.raises(ViewError, match="bad shader name"):
        shader_paths("../etc/passwd")
    with pytest.raises(ViewError, match="missing"):
        shader_paths("instanced", tmp_path)


def test_work_receipts_become_credits_that_raise_buildings():
    import time

    from cadencia.game.session import build_with_credits
    from hive_core.base.identity import Identity
    from hive_core.base.stage import Part
    from hive_core.economy import WorkReceipt
    from world.model import City

    alice = City(Identity.from_seed(b"a" * 32))
    alice.add_plot(alice.claim_district(), 0.0, 0.0, 8.0, 8.0)
    asker = Identity.from_seed(b"c" * 32)

    def receipt(worker: bytes) -> WorkReceipt:
        return WorkReceipt.create(asker, session_id=bytes(16), worker_id=worker, layer_start=0, layer_end=8,
                                  part=Part.FULL, tokens=40, wall_time_s=0.5,
                                  timestamp_ms=time.time_ns() // 1_000_000, stability=1.0,
                                  temperature_c=None, battery_pct=None, on_ac=True)

    mine, other = receipt(bytes.fromhex(alice.player_id)), receipt(b"\x01" * 20)
    earned = mine.reward_mc()
    assert earned >= 200
    raised = build_with_credits(alice, [mine, other], cost_mc=100)
    assert raised == earned // 100  # a first tower, then a level per 100 milli-credits
    (tower,) = alice.buildings().values()
    assert (tower.kind, tower.level) == ("tower", raised)
    assert alice.balance_mc() == earned % 100  # the other node's receipt paid someone else
    assert build_with_credits(alice, [mine], cost_mc=100) == 0  # the same receipt pays once


def test_pulse_replay_plays_each_hop_out_and_back_in_slow_motion():
    from hive_core.events import HopSent
    from world.view.game_source import PulseReplay

    a, b = b"\x01" * 20, b"\x02" * 20
    replay = PulseReplay(slow_motion=10.0, max_lag_s=0.75)
    hop = HopSent(session_id=bytes(16), from_node=a, to_node=b, sent_at=1.0, hop_time_s=0.01, nbytes=100)
    replay.hop(hop, heard_at=2.0)
    out, back = replay.in_flight(2.05)
    assert (out.src, out.dst, out.start, out.duration) == (a.hex(), b.hex(), 2.0, pytest.approx(0.1))
    assert (back.src, back.dst, back.start) == (b.hex(), a.hex(), pytest.approx(2.1))
    for _ in range(20):  # a burst queues on the link, but never more than max_lag behind
        replay.hop(hop, heard_at=2.0)
    assert max(p.start for p in replay.in_flight(2.0)) <= 2.0 + 0.75 + 0.1 + 1e-9
    assert replay.in_flight(60.0) == ()
    with pytest.raises(ViewError):
        PulseReplay(slow_motion=0.5)


def test_mesh_watcher_turns_status_records_into_the_map():
    from cadencia.game.mesh_watch import MeshWatcher
    from cadencia.game.session import game_source

    a, b, c, s = "aa" * 20, "bb" * 20, "cc" * 20, "dd" * 20
    view = {
        "nodes": [
            {"id": s, "role": "sentinel", "health": None},
            {"id": a, "role": "auto", "health": {"tflops": 2.0, "battery_pct": 100, "on_ac": True,
                                                  "temperature_c": 40.0, "success_rate": 1.0}},
            {"id": b, "role": "auto", "health": {"tflops": 1.0, "battery_pct": 20, "on_ac": False,
                                                  "temperature_c": 90.0, "success_rate": 1.0}},
            {"id": c, "role": "auto", "health": {"tflops": "junk"}},
        ],
        "rtt_ms": {a: {b: 10.0, c: 40.0}, b: {a: 12.0, c: 35.0}, c: {a: -5, b: "x"}},
    }
    source = game_source()
    watcher = MeshWatcher(source, "ws://127.0.0.1:1")
    watcher.apply(view, now=1.0)
    assert watcher.rejected == 1  # c's health is junk: c is drawn without it, nothing guessed
    frame = source.frame(1.0)
    ids = {d.node_id for d in frame.districts}
    assert ids == {a, b, c}  # the sentinel is not a district
    roads = {(r.a, r.b): r.rtt_ms for r in frame.roads}
    assert roads == {(a, b): 11.0, (a, c): 40.0, (b, c): 35.0}  # negatives and junk dropped
    pa, pb, pc = (frame.district(n) for n in (a, b, c))
    assert math.dist((pa.x, pa.y), (pb.x, pb.y)) < math.dist((pa.x, pa.y), (pc.x, pc.y))
    assert pb.efficiency < pa.efficiency  # hot, on battery: dimmer
    assert (pa.tflops, frame.district(c).tflops) == (2.0, 1.0)
    with pytest.raises(ViewError, match="malformed"):
        watcher.apply({"nodes": [{"role": "auto"}]}, now=2.0)


def test_spectator_camera_follows_the_latest_pulse():
    from world.view.app import follow_target
    from world.view.frame import DistrictView, PulseView, WorldFrame

    ds = (DistrictView("a", 0, 0, active=True), DistrictView("b", 10, 0), DistrictView("c", 20, 0))
    assert follow_target(WorldFrame(ds), 5.0) == "a"
    pulses = (PulseView("a", "b", 1.0, 0.5), PulseView("b", "c", 2.0, 0.5), PulseView("c", "a", 9.0, 0.5))
    assert follow_target(WorldFrame(ds, pulses=pulses), 5.0) == "c"  # the 9.0 hop is not sent yet
    assert follow_target(WorldFrame(), 5.0) is None


def test_spectator_rate_stays_on_the_last_answer_while_the_next_begins() -> None:
    def session(sid: bytes, rate: float, last_at: float) -> SessionSnapshot:
        return SessionSnapshot(sid, b"a" * 32, steps=int(rate), tokens_per_s=rate, verified=0,
                               started_at=0.0, last_at=last_at)

    def snap(*sessions: SessionSnapshot) -> GameSnapshot:
        return GameSnapshot(now=10.0, districts=(), pulses=(), towers=(), total_credits_mc=0,
                            verified_trials=0, slashings=0, sessions=sessions)

    assert _latest_rate(snap()) == 0.0
    done, begun = session(b"1" * 16, 12.5, 8.0), session(b"2" * 16, 0.0, 9.0)
    assert _latest_rate(snap(done, begun)) == 12.5  # the new answer has no decode step yet
    assert _latest_rate(snap(done, begun, session(b"3" * 16, 20.0, 9.5))) == 20.0

"""A city a stranger reads: districts say who they are, what they serve and how they are doing;
traffic on the roads has a direction and a rate; a legend and a minimap explain the rest."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cadencia.game.hive_link import star_layout
from cadencia.game.session import game_source
from cadencia.game.synthetic import SyntheticWorld
from hive_core.base.stage import Part
from hive_core.events import HopSent, ReplicaAnswered, Slashed, StageStarted, Verified, trial_id
from world.view.districts import ROW, district_layout, district_rows
from world.view.frame import DistrictView, HudView, RoadView, TowerView, WorldFrame
from world.view.labels import label_text, pick_labelled, plain
from world.view.names import short_name, unique_names
from world.view.overlay import legend_text, minimap_points
from world.view.roads import BACK, OUT, chevron_position, hops_per_chevron, traffic_rows

ASKER, FAST, SLOW, LIAR, HOT = (bytes([k]) * 20 for k in range(1, 6))
S = b"session-0000001!"


def demo_frame() -> WorldFrame:
    """What `cadencia demo` shows mid-answer: an asker, two stages on two servers each (one
    slow, one hot), a slashed liar, traffic on the roads."""
    ids = [n.hex() for n in (ASKER, FAST, SLOW, LIAR, HOT)]
    pos = star_layout(ASKER, [(n, 1.0) for n in (FAST, SLOW, LIAR, HOT)])
    d = [DistrictView(ids[0], *pos[ASKER], name="Vasu", role="asker"),
         DistrictView(ids[1], *pos[FAST], name="Tavo", layers=((0, 15),), n_layers=30, step_ms=20.0,
                      active=True, tokens=400),
         DistrictView(ids[2], *pos[SLOW], name="Kemi", layers=((15, 30),), n_layers=30, step_ms=45.0,
                      congestion=1.0, slowest=True),
         DistrictView(ids[3], *pos[LIAR], name="Rolu", layers=((0, 15),), n_layers=30, fall=1.0,
                      evidence="lied at step 2: output outside tolerance (signed evidence)"),
         DistrictView(ids[4], *pos[HOT], name="Pesa", layers=((15, 30),), n_layers=30, step_ms=22.0,
                      temperature_c=88.0)]
    roads = tuple(RoadView(ids[0], i, 2.0, rate_ab=6.0) for i in ids[1:])
    return WorldFrame(tuple(d), roads, (), (TowerView(ids[1], 2, 2, True, 2),),
                      hud=HudView(tokens_per_s=18.0, asker="Vasu", verified_steps=40, slashed=1))


def test_names_are_short_stable_and_unique() -> None:
    a = "3fa2b1" + "00" * 17
    assert short_name(a) == short_name(a) and short_name(a).isalpha() and 4 <= len(short_name(a)) <= 8
    twins = unique_names([a, a[:6] + "11" * 17])  # same first bytes: the same made-up name
    assert len(set(twins.values())) == 2


def test_a_towers_floors_are_the_layers_it_serves_and_its_state_shows() -> None:
    frame = demo_frame()
    lay = district_layout(frame.districts)
    rows = {d.name: np.array(district_rows(d, 0.0, 0.0, float(lay.footprint[k]), float(lay.height[k]),
                                           lay.unit), np.float32).reshape(-1, ROW)
            for k, d in enumerate(frame.districts)}
    tower = rows["Tavo"][1]
    assert tower[12] == 15  # one floor per layer it serves
    assert lay.top(frame.districts[1].node_id)[2] == pytest.approx(lay.unit * (0.1 * 15 + 0.1))
    crate = 0.16 * lay.unit
    def crates(name: str) -> int:
        return int(np.sum(np.isclose(rows[name][:, 4], crate) & np.isclose(rows[name][:, 6], crate)))
    assert crates("Tavo") == 0 and crates("Kemi") == 12  # the slow one has work piled in front
    queued = DistrictView("q", 0, 0, layers=((0, 15),), queued=3)
    assert int(np.sum(np.isclose(np.array(district_rows(queued, 0, 0, 1.0, 1.0, lay.unit))[:, 4], crate))) == 3
    beacon = rows["Rolu"][(rows["Rolu"][:, 8] == 1.0) & (rows["Rolu"][:, 9] < 0.1)]
    assert len(beacon) == 1 and beacon[0][6] >= 3 * lay.unit - 1e-4  # the liar's red beacon
    flame = rows["Pesa"][(rows["Pesa"][:, 8] == 1.0) & (rows["Pesa"][:, 7] == 1.0)]
    assert len(flame) == 2  # the hot one burns on its roof
    ids = [d.node_id for d in frame.districts]
    assert lay.height[ids.index(LIAR.hex())] < 0.3 * lay.height[ids.index(FAST.hex())]  # fallen


def test_congestion_starts_beyond_the_median() -> None:
    from world.view.districts import congestion_of

    assert congestion_of(20.0, 20.0) == congestion_of(23.0, 20.0) == 0.0  # noise is not congestion
    assert congestion_of(32.0, 20.0) == 0.5 and congestion_of(80.0, 20.0) == 1.0
    assert congestion_of(0.0, 20.0) == congestion_of(20.0, 0.0) == 0.0


def test_labels_say_who_what_and_how() -> None:
    frame = demo_frame()
    text = {d.name: plain(label_text(d, 21.0)) for d in frame.districts}
    assert text["Vasu"].startswith("Vasu  ASKER")
    assert "layers L0-14" in text["Tavo"] and "20 ms/step" in text["Tavo"]
    assert "SLOWEST, 2.1x the median" in text["Kemi"]
    assert "LIAR: lied at step 2" in text["Rolu"] and "signed evidence" in text["Rolu"]
    assert "HOT 88 C" in text["Pesa"]
    many = tuple(DistrictView(f"n{k}", k, 0, name=f"N{k}") for k in range(40)) + frame.districts
    picked = [d.name for d in pick_labelled(many, limit=5)]
    assert picked[:3] == ["Rolu", "Kemi", "Vasu"]  # the liar, the slowest, the asker first


def test_traffic_runs_out_and_back_at_the_hop_rate() -> None:
    frame = demo_frame()
    lay = district_layout(frame.districts)
    assert hops_per_chevron(frame.roads) == 2  # 6 hops/s: shown as 3 chevrons a second
    assert hops_per_chevron((RoadView("a", "b", 1.0, rate_ab=0.5),)) == 1
    rows = traffic_rows(frame.roads[:1], lay, per_chevron=2)
    out = rows[np.all(np.isclose(rows[:, 8:11], OUT), axis=1)]
    back = rows[np.all(np.isclose(rows[:, 8:11], BACK), axis=1)]
    assert len(out) == len(back) > 0
    # every chevron of a lane cycles rate / N times a second: N of them pass a point at `rate`
    assert float(out[:, 7].sum()) == pytest.approx(6.0 / 2)
    asker, worker = np.array(lay.xy[0]), np.array(lay.xy[1])
    start = out[0, 0:2]
    assert np.linalg.norm(start - asker) < np.linalg.norm(start - worker)  # out: asker -> worker
    assert np.linalg.norm(back[0, 0:2] - worker) < np.linalg.norm(back[0, 0:2] - asker)  # and back
    p0, p1 = (np.array(chevron_position(out[0], t)[:2]) for t in (0.0, 0.05))
    assert np.dot(p1 - p0, worker - asker) > 0  # it moves the way it points
    assert traffic_rows((RoadView("x", "y", 1.0),), lay, 1).shape == (0, 12)


def test_the_minimap_and_legend() -> None:
    frame = demo_frame()
    pts, box = minimap_points(frame.districts, 180.0)
    assert pts.min() >= 0 and pts.max() <= 180 and box[2] > box[0]
    assert "1 chevron = 2 hops" in plain(legend_text(2)) and "liar" in plain(legend_text(1))


def test_game_events_become_a_readable_frame() -> None:
    """The asker's reports of a real pipeline, folded by the game, give every district its
    layers and speed, mark the slowest and the liar, and put traffic on the roads."""
    source = game_source()
    source.state.set_layout(star_layout(ASKER, [(n, 1.0) for n in (FAST, SLOW, LIAR)]))
    source.roads = tuple(RoadView(ASKER.hex(), n.hex(), 1.0) for n in (FAST, SLOW, LIAR))
    t = 100.0
    for step in range(10):
        for node, start, took in ((FAST, 0, 0.01), (LIAR, 0, 0.012), (SLOW, 15, 0.03)):
            source.on_event(HopSent(S, ASKER, node, t, took / 2, 2304), t + took)
            if step == 0:
                source.on_event(StageStarted(S, node, start, start + 15, Part.FULL, t + took), t + took)
            source.on_event(ReplicaAnswered(S, trial_id(step, start, Part.FULL), node, b"r", t + took), t + took)
            t += took
        source.on_event(Verified(S, trial_id(step, 0, Part.FULL), (FAST,), t), t)
    source.on_event(Slashed(S, trial_id(3, 0, Part.FULL), LIAR, "root outside tolerance", t), t)
    frame = source.frame(t + 3.0)
    by = {d.node_id: d for d in frame.districts}
    slow, fast, liar, asker = by[SLOW.hex()], by[FAST.hex()], by[LIAR.hex()], by[ASKER.hex()]
    # the median of the honest nodes is 20 ms (the liar is out): 30 ms piles up some work
    assert slow.slowest and not fast.slowest and slow.congestion == 0.4 and fast.congestion == 0.0
    assert slow.layers == ((15, 30),) and fast.layers == ((0, 15),) and slow.n_layers == 30
    assert (slow.step_ms, fast.step_ms) == (30.0, 10.0)
    assert liar.fall == 1.0 and liar.evidence.startswith("lied at step 3: root outside tolerance")
    assert asker.role == "asker" and frame.hud.asker == asker.name and asker.name
    assert frame.hud.verified_steps == 10 and frame.hud.slashed == 1
    assert frame.hud.tokens_per_s == pytest.approx(9 / (t - 100.0 - 0.052), rel=0.1)
    rates = {r.b: r.rate_ab for r in frame.roads}
    assert rates[FAST.hex()] > 0 and math.isclose(rates[FAST.hex()], rates[SLOW.hex()], rel_tol=0.15)


def test_a_strangers_screenshot(make_app) -> None:
    """At 1280x720 the picture carries the labels, traffic that moves the way it points, the
    legend and a minimap whose dots are coloured by state."""
    from world.view.app import WorldApp
    from world.view.config import ViewConfig

    frame = demo_frame()
    now = [10.0]
    app = WorldApp(ViewConfig(1280, 720, offscreen=True), SyntheticWorld(frame), mode="spectate",
                   clock=lambda: now[0])
    try:
        app.step()
        app.step()
        shown = {app.labels._texts[n] for n in app.labels._texts}
        text = "\n".join(plain(t) for t in shown)
        assert "SLOWEST" in text and "LIAR" in text and "ASKER" in text
        rows = app.scene.traffic
        assert rows.count > 0
        px = app.pixels()
        # the minimap's red dot (the liar) and orange one (the slowest) are drawn
        corner = px[-200:, -200:].reshape(-1, 3).astype(int)
        red = (corner[:, 0] > 200) & (corner[:, 1] < 90) & (corner[:, 2] < 90)
        orange = (corner[:, 0] > 200) & (corner[:, 1] > 110) & (corner[:, 1] < 190) & (corner[:, 2] < 80)
        assert red.sum() >= 9 and orange.sum() >= 9
    finally:
        app.destroy()

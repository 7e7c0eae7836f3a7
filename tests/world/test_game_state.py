"""Game state: pulses, consensus towers, slashing, credits and buildings, dimming, the map."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hive_core.base.identity import Identity
from hive_core.base.stage import Part
from hive_core.economy import WorkReceipt
from hive_core.events import (
    HealthUpdated,
    HopSent,
    NodeLeft,
    ReceiptIssued,
    ReplicaAnswered,
    Slashed,
    StageStarted,
    Verified,
)
from world.game import MC_PER_FLOOR, GameError, GameEventError, GameState, TrialStatus
from world.game.rules import (
    ACTIVE_WINDOW_S,
    FALL_S,
    PULSE_LINGER_S,
    RISE_S,
    TOWER_LINGER_S,
    TRIAL_TIMEOUT_S,
)
from world.layout import HiveMap

CLIENT = Identity.from_seed(b"\x01" * 32)
A, B, C = (Identity.from_seed(bytes([n]) * 32).node_id for n in (2, 3, 4))
S = b"session-0000000!"


def receipt(worker: bytes, tokens: int = 100, layers: int = 30, at_ms: int = 1) -> WorkReceipt:
    return WorkReceipt.create(
        CLIENT, session_id=S, worker_id=worker, layer_start=0, layer_end=layers,
        part=Part.FULL, tokens=tokens, wall_time_s=0.5, timestamp_ms=at_ms, stability=1.0,
        temperature_c=40.0, battery_pct=None, on_ac=True,
    )


def placed_state() -> GameState:
    game = GameState()
    game.set_layout({A: (0.0, 0.0, 0.0), B: (100.0, 0.0, 0.0), C: (0.0, 50.0, 0.0)})
    return game


# --- pulses -----------------------------------------------------------------------------


def test_a_hop_is_a_pulse_travelling_over_its_measured_time() -> None:
    game = placed_state()
    game.apply(HopSent(S, A, B, sent_at=10.0, hop_time_s=0.04, nbytes=2304), now=10.0)
    assert game.snapshot(9.99).pulses == ()  # not sent yet
    for now, progress, x in [(10.0, 0.0, 0.0), (10.01, 0.25, 25.0), (10.04, 1.0, 100.0)]:
        (pulse,) = game.snapshot(now).pulses
        assert pulse.progress == pytest.approx(progress)
        assert pulse.position == pytest.approx((x, 0.0, 0.0))
        assert (pulse.from_node, pulse.to_node, pulse.nbytes) == (A, B, 2304)
    assert len(game.snapshot(10.04 + PULSE_LINGER_S - 1e-6).pulses) == 1  # arrival flash
    assert game.snapshot(10.04 + PULSE_LINGER_S + 1e-3).pulses == ()
    # Landed pulses are dropped from the state as later events come in.
    game.apply(HopSent(S, B, C, sent_at=11.0, hop_time_s=0.1, nbytes=1), now=11.0)
    assert [p.from_node for p in game.snapshot(10.02).pulses] == []  # pruned at 11.0
    assert [p.from_node for p in game.snapshot(11.05).pulses] == [B]


def test_a_hop_announced_twice_is_one_pulse_and_unplaced_nodes_have_no_position() -> None:
    game = GameState()
    hop = HopSent(S, A, B, sent_at=1.0, hop_time_s=0.5, nbytes=8)
    game.apply(hop, now=1.0)
    game.apply(hop, now=1.1)
    (pulse,) = game.snapshot(1.25).pulses
    assert pulse.progress == pytest.approx(0.5) and pulse.position is None
    assert {d.node_id for d in game.snapshot(1.25).districts} == {A, B}


# --- consensus trials -------------------------------------------------------------------


def test_replica_answers_converge_into_a_verified_tower() -> None:
    game = placed_state()
    game.apply(ReplicaAnswered(S, 7, A, b"root-1", at=1.0, quorum=2), now=1.0)
    (tower,) = game.snapshot(1.0).towers
    assert (tower.answers, tower.agreeing, tower.convergence) == (1, 1, 0.5)
    assert tower.status is TrialStatus.OPEN and tower.anchor == (0.0, 0.0, 0.0)
    game.apply(ReplicaAnswered(S, 7, C, b"root-2", at=1.1, quorum=2), now=1.1)
    (tower,) = game.snapshot(1.1).towers
    assert (tower.answers, tower.agreeing, tower.groups, tower.convergence) == (2, 1, 2, 0.5)
    game.apply(ReplicaAnswered(S, 7, B, b"root-1", at=1.2, quorum=2), now=1.2)
    game.apply(ReplicaAnswered(S, 7, B, b"root-2", at=1.3, quorum=2), now=1.3)  # ignored
    game.apply(Verified(S, 7, (A, B), at=1.4), now=1.4)
    (tower,) = game.snapshot(1.4).towers
    assert tower.nodes == (A, C, B)
    assert (tower.answers, tower.agreeing, tower.groups, tower.convergence) == (3, 2, 2, 1.0)
    assert tower.status is TrialStatus.VERIFIED and tower.resolved_at == 1.4
    # A replay at an earlier instant shows the tower as it stood then.
    (earlier,) = game.snapshot(1.15).towers
    assert (earlier.answers, earlier.status) == (2, TrialStatus.OPEN)
    assert game.snapshot(1.4 + TOWER_LINGER_S + 0.1).towers == ()
    assert game.snapshot(2.0).verified_trials == 1


def test_verdict_names_replicas_that_never_announced_an_answer() -> None:
    game = placed_state()
    game.apply(ReplicaAnswered(S, 1, A, b"r", at=1.0, quorum=3), now=1.0)
    game.apply(Verified(S, 1, (A, B, C), at=1.5), now=1.5)
    (tower,) = game.snapshot(1.5).towers
    assert (tower.answers, tower.agreeing, tower.groups, tower.quorum) == (3, 3, 1, 3)
    game.apply(Verified(S, 2, (B, C), at=1.6), now=1.6)  # a verdict with no answers seen
    tower = game.snapshot(1.6).towers[1]
    assert (tower.step, tower.agreeing, tower.status) == (2, 2, TrialStatus.VERIFIED)


def test_a_trial_without_verdict_expires() -> None:
    game = placed_state()
    game.apply(ReplicaAnswered(S, 2, A, b"x", at=0.0), now=0.0)
    game.apply(ReplicaAnswered(S, 2, B, b"y", at=0.1), now=0.1)
    (tower,) = game.snapshot(TRIAL_TIMEOUT_S - 1).towers
    assert tower.status is TrialStatus.OPEN
    (tower,) = game.snapshot(TRIAL_TIMEOUT_S).towers
    assert tower.status is TrialStatus.EXPIRED and tower.resolved_at == TRIAL_TIMEOUT_S
    assert game.snapshot(TRIAL_TIMEOUT_S + TOWER_LINGER_S + 1).towers == ()


# --- slashing ---------------------------------------------------------------------------


def test_a_slashed_district_falls_and_stays_down() -> None:
    game = placed_state()
    game.apply(StageStarted(S, B, 0, 15, Part.FULL, at=4.0), now=4.0)
    game.apply(ReplicaAnswered(S, 0, B, b"bad", at=4.5), now=4.5)
    game.apply(Slashed(S, 0, B, "answer outside tolerance", at=5.0), now=5.0)
    assert not game.snapshot(4.9).district(B).fallen
    assert game.snapshot(4.9).district(B).active
    falling = game.snapshot(5.0 + FALL_S / 2).district(B)
    assert falling.fallen and not falling.active
    assert falling.fall_progress == pytest.approx(0.5)
    assert falling.slash_reason == "answer outside tolerance"
    down = game.snapshot(100.0)
    assert down.district(B).fall_progress == 1.0 and down.slashings == 1
    (tower,) = game.snapshot(5.0).towers
    assert tower.slashed == (B,)
    assert not game.snapshot(5.0).district(A).fallen


# --- credits and buildings ----------------------------------------------------------------


def test_verified_receipts_raise_buildings_once_each() -> None:
    game = placed_state()
    r = receipt(A, tokens=100, layers=30)  # 100 tokens x 30 layers: 3 credits
    assert r.reward_mc() == 3000
    game.apply(ReceiptIssued(r, at=2.0), now=2.0)
    game.apply(ReceiptIssued(r, at=2.5), now=2.5)  # the same work announced again
    assert game.credits_mc(A) == 3000 and game.credits_mc(B) == 0
    assert game.snapshot(2.0).district(A).building_height == 0.0
    mid = game.snapshot(2.0 + RISE_S / 2).district(A)
    assert mid.floors == 3 and mid.building_height == pytest.approx(1.5)
    assert game.snapshot(2.0 + RISE_S).district(A).building_height == pytest.approx(3.0)
    game.apply(ReceiptIssued(receipt(A, tokens=50, layers=10, at_ms=2), at=9.0), now=9.0)
    snap = game.snapshot(20.0)
    assert snap.district(A).credits_mc == 3500 and snap.district(A).floors == 3
    assert snap.district(A).building_height == pytest.approx(3500 / MC_PER_FLOOR)
    assert snap.total_credits_mc == 3500


def test_forged_receipts_are_refused_and_change_nothing() -> None:
    game = placed_state()
    before = game.snapshot(1.0)
    forged = dataclasses.replace(receipt(A), tokens=100_000)  # signature covers tokens
    with pytest.raises(GameEventError, match="refused receipt"):
        game.apply(ReceiptIssued(forged, at=1.0), now=1.0)
    assert game.snapshot(1.0) == before and game.credits_mc(A) == 0


# --- health, leaving, activity -------------------------------------------------------------


def test_heat_and_battery_dim_a_district() -> None:
    game = placed_state()
    game.apply(HealthUpdated(A, 45.0, None, True, 1.0, at=1.0), now=1.0)
    game.apply(HealthUpdated(B, 90.0, None, True, 1.0, at=1.0), now=1.0)
    game.apply(HealthUpdated(C, 45.0, 50.0, False, 1.0, at=1.0), now=1.0)
    snap = game.snapshot(1.0)
    cool, hot, battery = snap.district(A), snap.district(B), snap.district(C)
    assert cool.efficiency == 1.0 and cool.battery is None
    assert 0.12 <= hot.efficiency < cool.efficiency
    assert battery.efficiency == pytest.approx(0.6) and battery.battery == 0.5
    assert not battery.on_ac


def test_nodes_leave_and_glow_only_while_working() -> None:
    game = placed_state()
    game.apply(StageStarted(S, A, 0, 30, Part.FULL, at=3.0), now=3.0)
    assert game.snapshot(3.0 + ACTIVE_WINDOW_S / 2).district(A).active
    assert not game.snapshot(3.0 + 2 * ACTIVE_WINDOW_S).district(A).active
    assert not game.snapshot(3.0).district(B).active
    game.apply(NodeLeft(A, at=3.2), now=3.2)
    gone = game.snapshot(3.3).district(A)
    assert not gone.online and not gone.active


# --- bad input and the map ----------------------------------------------------------------


def test_events_from_the_future_and_non_events_are_refused() -> None:
    game = GameState()
    with pytest.raises(GameEventError, match="ahead"):
        game.apply(NodeLeft(A, at=100.0), now=1.0)
    with pytest.raises(GameEventError, match="not a game event"):
        game.apply("HopSent", now=1.0)  # type: ignore[arg-type]
    with pytest.raises(GameEventError, match="not a game event"):
        game.apply(dataclasses.make_dataclass("Fake", [("at", float)])(1.0), now=1.0)  # type: ignore[arg-type]
    assert game.snapshot(1.0).districts == ()


def test_layout_from_the_hive_map_places_districts() -> None:
    ids = [A, B, C]
    rtt = np.array([[0.0, 30.0, 40.0], [30.0, 0.0, 50.0], [40.0, 50.0, 0.0]])
    game = GameState()
    game.set_layout(HiveMap(3).update(ids, rtt))
    snap = game.snapshot(0.0)
    pa, pb = np.array(snap.district(A).position), np.array(snap.district(B).position)
    assert np.linalg.norm(pa - pb) == pytest.approx(30.0, rel=0.02)
    hex_map = HiveMap(2).update([i.hex() for i in ids], rtt)  # text ids: their hex form
    game.set_layout(hex_map)
    assert len(game.snapshot(0.0).district(C).position or ()) == 2
    with pytest.raises(GameError, match="is not a node id"):
        game.set_layout({"nobody": (0.0, 0.0)})  # type: ignore[dict-item]
    with pytest.raises(GameError, match="2 or 3 coordinates"):
        game.set_layout({A: (0.0,)})
    with pytest.raises(KeyError):
        snap.district(b"z" * 20)


def test_unchanged_districts_are_reused_between_frames() -> None:
    game = placed_state()
    first = game.snapshot(1.0)
    second = game.snapshot(1.016)
    assert all(a is b for a, b in zip(first.districts, second.districts))
    game.apply(HealthUpdated(B, 92.0, None, True, 1.0, at=1.02), now=1.02)
    third = game.snapshot(1.032)
    assert third.district(A) is first.district(A)
    assert third.district(B) is not first.district(B)
    assert third.district(B).efficiency < 1.0

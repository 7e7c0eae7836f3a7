"""The city schema and its commands: typed views, validation, ownership, undo/redo, ledger."""

from __future__ import annotations

import pytest

from hive_core.base.stage import Part
from hive_core.economy import SpendError, WorkReceipt
from world.model import (
    City,
    NotOwnerError,
    Outcome,
    SchemaError,
    UnknownEntryError,
)

from .conftest import Recorder, player


def test_commands_build_a_typed_city(alice: Recorder) -> None:
    city = alice.city
    city.join("alice")
    district = city.claim_district(role="alpha", health=0.75)
    plot = city.add_plot(district, 0.0, 0.0, 10.0, 8.0)
    b = city.place_building("tower", (1.0, 2.0, 0.0), rotation=370.0, plot=plot)
    road = city.add_road([(0.0, 0.0), (5.0, 0.0), (5.0, 5.0)])
    assert city.players()[city.player_id].name == "alice"
    assert city.districts()[district].role == "alpha"
    assert city.districts()[district].health == 0.75
    assert city.plots()[plot].width == 10.0
    got = city.building(b)
    assert (got.kind, got.position, got.rotation, got.level, got.owner, got.plot) == (
        "tower", (1.0, 2.0, 0.0), 10.0, 1, city.player_id, plot)
    assert city.roads()[road].points == ((0.0, 0.0), (5.0, 0.0), (5.0, 5.0))
    city.move(b, (3.0, 4.0, 0.5))
    city.rotate(b, -90.0)
    assert city.upgrade(b) == 2
    got = city.building(b)
    assert got.position == (3.0, 4.0, 0.5) and got.rotation == 270.0 and got.level == 2
    city.remove(b)
    city.remove_road(road)
    assert city.buildings() == {} and city.roads() == {}
    counts = city.counts()
    assert counts["plots"] == 1 and counts["districts"] == 1 and counts["players"] == 1


def test_each_command_is_one_signed_edit_advancing_the_clock(alice: Recorder) -> None:
    city = alice.city
    b = city.place_building("house", (0.0, 0.0, 0.0))
    city.remove(b)  # a pure delete still advances the clock (the edit counter)
    assert len(alice.edits) == 2
    first, second = alice.edits
    assert first.start == 0 and first.end == second.start < second.end
    assert city.state_vector() == {city.client_id: second.end}
    for e in alice.edits:
        e.verify()
        assert e.author == city.identity.public_key


def test_bad_input_is_a_clear_error_and_changes_nothing(alice: Recorder) -> None:
    city = alice.city
    b = city.place_building("house", (0.0, 0.0, 0.0))
    before = city.to_json()
    with pytest.raises(SchemaError, match="unknown building kind"):
        city.place_building("castle", (0.0, 0.0, 0.0))
    with pytest.raises(SchemaError, match="out of range"):
        city.move(b, (float("nan"), 0.0, 0.0))
    with pytest.raises(SchemaError, match="role"):
        city.claim_district(role="king")
    with pytest.raises(SchemaError, match="points"):
        city.add_road([(0.0, 0.0)])
    with pytest.raises(UnknownEntryError, match="no building"):
        city.upgrade("0123456789abcdef")
    for _ in range(9):
        city.upgrade(b)
    with pytest.raises(SchemaError, match="level"):
        city.upgrade(b)
    assert len(alice.edits) == 10  # one place + nine upgrades; refused commands wrote nothing
    assert city.building(b).level == 10
    after = city.to_json()
    assert {k: v for k, v in after.items() if k not in ("buildings", "players")} == {
        k: v for k, v in before.items() if k not in ("buildings", "players")}


def test_cannot_command_what_another_player_owns(alice: Recorder, bob: Recorder) -> None:
    b = alice.city.place_building("house", (0.0, 0.0, 0.0))
    for e in alice.edits:
        assert bob.city.receive(e) is Outcome.ACCEPTED
    with pytest.raises(NotOwnerError):
        bob.city.move(b, (1.0, 1.0, 0.0))
    with pytest.raises(NotOwnerError):
        bob.city.remove(b)
    with pytest.raises(NotOwnerError, match="only be written by that node"):
        bob.city.claim_district(alice.city.player_id)
    assert bob.edits == []


def test_undo_redo_are_per_player(alice: Recorder, bob: Recorder) -> None:
    a_b = alice.city.place_building("house", (0.0, 0.0, 0.0))
    alice.city.move(a_b, (5.0, 0.0, 0.0))
    for e in alice.edits:
        bob.city.receive(e)
    b_b = bob.city.place_building("park", (9.0, 9.0, 0.0))
    for e in bob.edits:
        alice.city.receive(e)
    # Alice's undo reverts her own move, not Bob's park.
    assert alice.city.undo()
    assert alice.city.building(a_b).position == (0.0, 0.0, 0.0)
    assert b_b in alice.city.buildings()
    assert alice.city.undo()
    assert a_b not in alice.city.buildings()
    assert not alice.city.can_undo()
    assert alice.city.redo() and alice.city.redo()
    assert alice.city.building(a_b).position == (5.0, 0.0, 0.0)
    # Undo and redo are edits too: Bob receives them and converges.
    for e in alice.edits[2:]:
        assert bob.city.receive(e) is Outcome.ACCEPTED
    assert bob.city.to_json() == alice.city.to_json()
    assert bob.city.can_undo() and not bob.city.can_redo()
    assert bob.city.undo()
    assert b_b not in bob.city.buildings()


def _receipt(client: City, worker_id: bytes, tokens: int) -> WorkReceipt:
    return WorkReceipt.create(
        client.identity, session_id=bytes(16), worker_id=worker_id, layer_start=0,
        layer_end=10, part=Part.FULL, tokens=tokens, wall_time_s=2.0,
        timestamp_ms=1_700_000_000_000, stability=1.0, temperature_c=40.0,
        battery_pct=None, on_ac=True)


def test_buildings_are_paid_from_the_ledger_once(alice: Recorder, bob: Recorder) -> None:
    # Bob used Alice's device for work: his signed receipt pays her; she records it.
    worker = bytes.fromhex(alice.city.player_id)
    receipt = _receipt(bob.city, worker, tokens=500)
    alice.city.record_receipt(receipt)
    alice.city.record_receipt(receipt)  # recorded once
    earned = alice.city.balance_mc()
    assert earned == receipt.reward_mc() > 0
    b = alice.city.place_building("datacenter", (0.0, 0.0, 0.0), cost_mc=earned // 2)
    spend_id = alice.city.building(b).spend
    assert alice.city.ledger().is_funded(spend_id)
    assert alice.city.balance_mc() == earned - earned // 2
    with pytest.raises(SpendError, match="overdraws"):
        alice.city.place_building("tower", (1.0, 0.0, 0.0), cost_mc=earned)
    for e in alice.edits:
        assert bob.city.receive(e) is Outcome.ACCEPTED
    assert bob.city.balance_mc(alice.city.player_id) == earned - earned // 2
    # Bob cannot record a receipt that neither pays him nor was signed by him.
    third = City(player(3))
    with pytest.raises(NotOwnerError):
        bob.city.record_receipt(_receipt(third, worker, tokens=10))


def test_a_failing_listener_does_not_break_the_model(alice: Recorder,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    def boom(*_: object) -> None:
        raise RuntimeError("view crashed")

    alice.city.on_local_edit(boom)
    alice.city.on_change(boom)
    b = alice.city.place_building("house", (0.0, 0.0, 0.0))
    assert "view crashed" in caplog.text
    assert alice.city.building(b).kind == "house" and len(alice.edits) == 1
    peer = City(player(7))
    assert peer.receive(alice.edits[0]) is Outcome.ACCEPTED

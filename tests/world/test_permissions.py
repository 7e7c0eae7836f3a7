"""Permissions: a forged or unauthorised edit is rejected and the live doc is untouched."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from pycrdt import Doc, Map, merge_updates

from hive_core.economy import Spend
from world.model import City, Outcome, SignedEdit
from world.model.authority import spend_key
from world.model.edit import MAX_UPDATE_BYTES

from .conftest import Recorder, player


def _forge(author: City, mutate: Callable[[City], None]) -> SignedEdit:
    """An edit the author signs after writing straight into a copy of its doc.

    This bypasses the commands' own checks, as a modified client would.
    """
    out: list[SignedEdit] = []
    author.on_local_edit(out.append)
    with author._txn():
        mutate(author)
    return out[-1]


@pytest.fixture
def shared(alice: Recorder, bob: Recorder) -> tuple[Recorder, Recorder, str]:
    """Alice owns a building; Bob has seen it."""
    alice.city.join("alice")
    b = alice.city.place_building("house", (0.0, 0.0, 0.0))
    bob.city.join("bob")
    for e in alice.edits:
        assert bob.city.receive(e) is Outcome.ACCEPTED
    for e in bob.edits:
        assert alice.city.receive(e) is Outcome.ACCEPTED
    return alice, bob, b


def _buildings(c: City) -> Map:
    return c.doc.get("buildings", type=Map)


ATTACKS: dict[str, Callable[[City, str], None]] = {
    "change another's building": lambda c, b: _buildings(c)[b].__setitem__("level", 9),
    "remove another's building": lambda c, b: _buildings(c).__delitem__(b),
    "take another's building": lambda c, b: _buildings(c)[b].__setitem__("owner", c.player_id),
    "build in another's name": lambda c, b: _buildings(c).__setitem__("00000000cafe0001", Map(
        {"kind": "house", "x": 0.0, "y": 0.0, "z": 0.0, "rotation": 0.0, "level": 1,
         "owner": "ab" * 20, "plot": "", "spend": ""})),
    "invalid building": lambda c, b: _buildings(c).__setitem__("00000000cafe0002", Map(
        {"kind": "house", "x": "far", "owner": c.player_id})),
    "rename another player": lambda c, b: c.doc.get("players", type=Map)[
        next(k for k in c.doc.get("players", type=Map) if k != c.player_id)
    ].__setitem__("name", "mallory"),
    "claim another node's district": lambda c, b: c.doc.get("districts", type=Map).__setitem__(
        "cd" * 20, Map({"owner": c.player_id, "role": "alpha", "health": 1.0})),
    "forged receipt": lambda c, b: c.doc.get("receipts", type=Map).__setitem__(
        "00" * 16, "00" * 200),
    "unknown root": lambda c, b: c.doc.get("treasury", type=Map).__setitem__("gold", 1e9),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_unauthorised_edit_is_rejected_and_doc_untouched(
    shared: tuple[Recorder, Recorder, str], attack: str, caplog: pytest.LogCaptureFixture
) -> None:
    alice, bob, b = shared
    edit = _forge(bob.city, lambda c: ATTACKS[attack](c, b))
    before, sv = alice.city.to_json(), alice.city.state_vector()
    with caplog.at_level(logging.WARNING, logger="world.model"):
        assert alice.city.receive(bytes(edit)) is Outcome.REJECTED
    assert "rejected edit" in caplog.text
    assert alice.city.to_json() == before
    assert alice.city.state_vector() == sv
    assert alice.city.rejected == 1
    # The live doc and its scratch copy are intact: Alice's own edits still flow to others.
    alice.city.move(b, (1.0, 1.0, 0.0))
    carol = City(player(3))
    for e in alice.city.edits_since({}):
        assert carol.receive(e) is Outcome.ACCEPTED
    assert carol.building(b).position == (1.0, 1.0, 0.0)


def test_ledger_entries_are_append_only_and_own(shared: tuple[Recorder, Recorder, str]) -> None:
    alice, bob, _ = shared
    spend = Spend.create(alice.city.identity, amount_mc=5, purpose="x", timestamp_ms=1)
    # Bob records Alice's (validly signed) spend: not his account.
    edit = _forge(bob.city, lambda c: c.doc.get("spends", type=Map).__setitem__(
        spend_key(spend), bytes(spend).hex()))
    assert alice.city.receive(edit) is Outcome.REJECTED
    assert len(alice.city.doc.get("spends", type=Map)) == 0


def test_forged_signature_is_rejected(shared: tuple[Recorder, Recorder, str]) -> None:
    alice, bob, _ = shared
    bob.city.place_building("park", (3.0, 3.0, 0.0))
    good = bob.edits[-1]
    tampered = SignedEdit(good.author, good.start, good.end, good.update,
                          bytes(64))
    before = alice.city.to_json()
    assert alice.city.receive(bytes(tampered)) is Outcome.REJECTED
    # Claiming to be Alice with Bob's key: the signature is Bob's, the key Alice's.
    impostor = SignedEdit(alice.city.identity.public_key, 10_000, 10_001, good.update,
                          good.signature)
    assert alice.city.receive(bytes(impostor)) is Outcome.REJECTED
    assert alice.city.to_json() == before
    assert alice.city.receive(bytes(good)) is Outcome.ACCEPTED


def test_edit_carrying_someone_elses_items_is_rejected(shared: tuple[Recorder, Recorder, str]
                                                       ) -> None:
    alice, bob, _ = shared
    carol = Recorder(3)
    carol.city.place_building("house", (5.0, 5.0, 0.0))
    # Bob relays Carol's items inside an edit signed by himself.
    bob.city.place_building("park", (1.0, 1.0, 0.0))
    own = bob.edits[-1]
    mixed = SignedEdit.create(bob.city.identity, own.start, own.end,
                              merge_updates(own.update, carol.edits[-1].update))
    assert alice.city.receive(mixed) is Outcome.REJECTED
    assert len(alice.city.buildings()) == 1


@pytest.mark.parametrize("data", [b"", b"\x01" * 10, b"\x01" + bytes(200)])
def test_malformed_edit_bytes_are_rejected(alice: Recorder, data: bytes) -> None:
    assert alice.city.receive(data) is Outcome.REJECTED


def test_undecodable_update_is_rejected(alice: Recorder, bob: Recorder) -> None:
    edit = SignedEdit.create(bob.city.identity, 0, 1, b"\xff\x00garbage")
    assert alice.city.receive(edit) is Outcome.REJECTED
    assert alice.city.state_vector() == {}


def test_edit_size_is_bounded(bob: Recorder) -> None:
    from world.model import EditError

    with pytest.raises(EditError, match="update must be"):
        SignedEdit.create(bob.city.identity, 0, 1, bytes(MAX_UPDATE_BYTES + 1))


def test_import_is_validated_as_the_local_players_edit(shared: tuple[Recorder, Recorder, str]
                                                       ) -> None:
    alice, bob, b = shared
    # An update from a foreign Yjs client that changes Alice's building: Bob may not import it.
    foreign: Doc = Doc()
    foreign.apply_update(bob.city.export_update())
    foreign.get("buildings", type=Map)[b]["level"] = 3
    update = foreign.get_update(bob.city.doc.get_state())
    from world.model import EditError

    with pytest.raises(EditError, match="belongs to"):
        bob.city.import_update(update)
    assert bob.city.building(b).level == 1
    # Alice may: it becomes her own signed edit, which Bob then accepts from her.
    n_edits = len(alice.edits)
    assert alice.city.import_update(update) == 1  # one entry changed
    assert alice.city.building(b).level == 3
    assert alice.city.import_update(update) == 0  # merging it again changes nothing
    new = alice.edits[n_edits:]
    assert len(new) == 1 and new[0].author == alice.city.identity.public_key
    assert bob.city.receive(new[0]) is Outcome.ACCEPTED
    assert bob.city.to_json() == alice.city.to_json()


def test_import_rejects_garbage(alice: Recorder) -> None:
    from world.model import EditError

    with pytest.raises(EditError, match="not a Yjs update"):
        alice.city.import_update(b"\xff\xff\xff")


def _foreign_building(owner: str, client_id: int, key: str = "00000000000000f1",
                      base: bytes | None = None) -> bytes:
    """A Yjs update from a non-player client (a JavaScript tab, say) adding one building,
    after it has seen `base`."""
    doc: Doc = Doc(client_id=client_id)
    if base is not None:
        doc.apply_update(base)
    doc.get("buildings", type=Map)[key] = Map(
        {"kind": "park", "x": 0.0, "y": 0.0, "z": 0.0, "rotation": 0.0, "level": 1,
         "owner": owner, "plot": "", "spend": ""})
    return doc.get_update()


def test_foreign_clients_are_adopted_first_come(shared: tuple[Recorder, Recorder, str]) -> None:
    from world.model import EditError

    alice, bob, _ = shared
    alice.city.import_update(_foreign_building(alice.city.player_id, 4242))
    assert alice.city.players()[alice.city.player_id].clients == (4242,)
    for e in alice.edits[-1:]:
        assert bob.city.receive(e) is Outcome.ACCEPTED
    # The same client id cannot ride in Bob's edits: Alice adopted it.
    with pytest.raises(EditError, match="belong to player"):
        bob.city.import_update(_foreign_building(bob.city.player_id, 4242, "00000000000000f2",
                                                 base=bob.city.export_update()))
    # Nor can anyone import items written under another player's own client id.
    with pytest.raises(EditError, match="belong to player"):
        bob.city.import_update(_foreign_building(bob.city.player_id, alice.city.client_id,
                                                 "00000000000000f3",
                                                 base=bob.city.export_update()))
    # A forged edit by Bob that carries a client he did not adopt is rejected remotely.
    before = alice.city.to_json()
    edit = _forge(bob.city, lambda c: c.doc.apply_update(
        _foreign_building(c.player_id, 777, "00000000000000f4")))
    assert alice.city.receive(edit) is Outcome.REJECTED
    assert alice.city.to_json() == before

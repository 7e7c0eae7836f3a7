"""Interop with the JavaScript Yjs ecosystem: a Node peer (yjs + y-protocols) and a Python
city sync both ways over the y-protocols messages; JSON views end equal."""

from __future__ import annotations

import pytest

from world.model import City, EditError
from world.model.lib0 import decode_state_vector
from world.model.yproto import (
    Awareness,
    AwarenessEntry,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    decode,
    encode,
)

from .conftest import player
from .jspeer import JsPeer


def _take(peer: JsPeer, kind: type) -> object:
    while True:
        frame = peer.pending.pop(0) if peer.pending else peer.recv()
        msg = decode(frame)
        if isinstance(msg, kind):
            return msg


def test_python_and_yjs_sync_both_ways() -> None:
    alice = City(player(1))
    alice.join("alice")
    district = alice.claim_district(role="beta", health=0.5)
    b = alice.place_building("tower", (1.0, 2.0, 0.0), rotation=45.0)
    alice.add_road([(0.0, 0.0), (3.0, 4.0)])
    with JsPeer() as peer:
        # Python's step 1; the JS peer answers step 2 (it has nothing yet).
        peer.send(encode(SyncStep1(alice.doc.get_state())))
        step2 = _take(peer, SyncStep2)
        assert alice.import_update(step2.update) == 0  # type: ignore[attr-defined]
        # The JS peer's step 1; Python answers with what it lacks.
        assert peer.command("step1") == {"ok": True}
        step1 = _take(peer, SyncStep1)
        assert decode_state_vector(step1.state_vector) == {}  # type: ignore[attr-defined]
        peer.send(encode(SyncStep2(alice.doc.get_update(step1.state_vector))))  # type: ignore[attr-defined]
        assert peer.command("json") == alice.to_json()

        # From here, every local edit of Python's city goes to the JS peer as an update,
        # the imports included: they are replayed as this player's own edits.
        sent: list[bytes] = []
        alice.on_local_edit(lambda e: sent.append(e.update))

        # A JS client of the same player edits: new building, and moves the tower.
        fields = {"kind": "park", "x": 5, "y": 6, "z": 0, "rotation": 0, "level": 1,
                  "owner": alice.player_id, "plot": "", "spend": ""}
        peer.command("set", root="buildings", key="00000000000000aa", fields=fields)
        peer.command("set", root="buildings", key=b, fields={"x": 9.5})
        for _ in range(2):
            update = _take(peer, SyncUpdate).update  # type: ignore[attr-defined]
            assert alice.import_update(update) == 1
        assert alice.building("00000000000000aa").position == (5.0, 6.0, 0.0)
        assert alice.building(b).position == (9.5, 2.0, 0.0)

        # Python edits; each signed edit's Yjs update goes to the JS peer as is.
        alice.upgrade(b)
        alice.remove("00000000000000aa")
        alice.claim_district(district, role="alpha", health=0.9)
        for update in sent:
            peer.send(encode(SyncUpdate(update)))
        js = peer.command("json")
        assert js == alice.to_json()
        assert len(sent) == 5
        # Not only the JSON: both hold the same items (the JS client's included, adopted).
        peer.command("step1")
        js_sv = decode_state_vector(_take(peer, SyncStep1).state_vector)  # type: ignore[attr-defined]
        assert js_sv == alice.state_vector() and len(js_sv) == 2
        assert alice.players()[alice.player_id].clients == tuple(
            c for c in js_sv if c != alice.client_id)
        assert js["buildings"][b]["level"] == 2 and "00000000000000aa" not in js["buildings"]

        # A JS client writing what this player does not own is refused; nothing changes.
        before = alice.to_json()
        peer.command("set", root="buildings", key=b, fields={"owner": "ab" * 20})
        with pytest.raises(EditError, match="owned by someone else"):
            alice.import_update(_take(peer, SyncUpdate).update)  # type: ignore[attr-defined]
        assert alice.to_json() == before

        # Awareness (presence) both ways through y-protocols/awareness.
        peer.send(encode(Awareness((AwarenessEntry(alice.client_id, 1, {"cursor": [1, 2]}),))))
        assert peer.command("peers") == {str(alice.client_id): {"cursor": [1, 2]}}
        answer = peer.command("presence", state={"name": "js"})
        aw = _take(peer, Awareness)
        assert aw.entries[0].client_id == answer["clientID"]  # type: ignore[attr-defined]
        assert aw.entries[0].state == {"name": "js"}  # type: ignore[attr-defined]

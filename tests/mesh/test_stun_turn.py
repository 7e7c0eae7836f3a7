"""The sentinel's STUN responder and coturn relay: what ICE gathers through them, and what they refuse."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from aioice import Connection, stun

from hive_core.mesh.rtc import IceServer, RTCOptions, connect_pair
from hive_core.mesh.stun import binding_response, start_stun
from hive_core.mesh.turn import credential, start_turn, turn_available

pytestmark = [pytest.mark.net, pytest.mark.timeout(60)]
needs_turn = pytest.mark.skipif(turn_available() is not None, reason=str(turn_available()))


def test_binding_requests_are_answered_with_the_source_address() -> None:
    req = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    reply = binding_response(bytes(req), ("192.0.2.7", 40000))
    assert reply is not None
    msg = stun.parse_message(reply)
    assert msg.message_class == stun.Class.RESPONSE and msg.transaction_id == req.transaction_id
    assert msg.attributes["XOR-MAPPED-ADDRESS"] == ("192.0.2.7", 40000)


@pytest.mark.parametrize("data", [
    b"", b"\x00" * 19, os.urandom(64), bytes(stun.Message(stun.Method.ALLOCATE, stun.Class.REQUEST)),
    bytes(stun.Message(stun.Method.BINDING, stun.Class.RESPONSE)), b"\x00\x01" + b"\xff" * 600,
])
def test_anything_but_a_binding_request_is_dropped(data: bytes) -> None:
    """A careful adversary sends responses, other methods and garbage to make the responder
    reflect traffic at a victim: nothing is answered."""
    assert binding_response(data, ("192.0.2.7", 40000)) is None


async def test_ice_gathers_a_server_reflexive_candidate_from_our_stun() -> None:
    transport, responder = await start_stun("127.0.0.1", 0)
    port = transport.get_extra_info("sockname")[1]
    conn = Connection(ice_controlling=True, stun_server=("127.0.0.1", port))
    try:
        cands = await conn.get_component_candidates(1, ["127.0.0.1"], timeout=2)
        assert {c.type for c in cands} == {"host", "srflx"} and responder.stats.answered == 1
    finally:
        await conn.close()
        transport.close()


@needs_turn
async def test_coturn_relays_for_valid_credentials_only(tmp_path: Path) -> None:
    turn = await start_turn("127.0.0.1", 0, state_dir=tmp_path)
    try:
        good = turn.credential_for("ab" * 20)
        forged = credential(b"not the secret", turn.url, "ab" * 20)
        expired = credential(turn.secret, turn.url, "ab" * 20, ttl_s=-60)
        for cred, relayed in ((good, True), (forged, False), (expired, False)):
            conn = Connection(ice_controlling=True, turn_server=("127.0.0.1", turn.port),
                              turn_username=cred.username, turn_password=cred.password)
            try:
                cands = await conn.get_component_candidates(1, ["127.0.0.1"], timeout=2)
            finally:
                await conn.close()
            assert ("relay" in {c.type for c in cands}) is relayed, cred
    finally:
        await turn.close()


@needs_turn
async def test_peers_connect_with_the_hives_ice_servers_and_a_dead_stun_costs_no_wait(tmp_path: Path) -> None:
    turn = await start_turn("127.0.0.1", 0, state_dir=tmp_path)
    transport, _ = await start_stun("127.0.0.1", 0)
    stun_port = transport.get_extra_info("sockname")[1]
    try:
        cred = turn.credential_for("cd" * 20)
        servers = (IceServer(f"stun:127.0.0.1:{stun_port}"),
                   IceServer(cred.url, cred.username, cred.password))
        a, b, ca, cb = await connect_pair(RTCOptions.loopback(ice_servers=servers),
                                          RTCOptions.loopback(ice_servers=servers))
        try:
            await ca.send(b"through")
            assert await asyncio.wait_for(cb.recv(), 5) == b"through"
            assert "typ relay" in a._pc.localDescription.sdp
        finally:
            await asyncio.gather(a.close(), b.close())
        # A STUN server that never answers delays the connection by the gather timeout only.
        silent = (IceServer("stun:127.0.0.1:9"),)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        a, b, ca, cb = await connect_pair(RTCOptions.loopback(ice_servers=silent, gather_timeout_s=1),
                                          RTCOptions.loopback(ice_servers=silent, gather_timeout_s=1))
        await asyncio.gather(a.close(), b.close())
        assert loop.time() - t0 < 5
    finally:
        transport.close()
        await turn.close()


@pytest.mark.parametrize("url,user,cred", [
    ("http://x:1", "", ""), ("stun:host", "", ""), ("stun:host:99999", "", ""),
    ("turn:host:3478", "", ""), ("turn:host:3478", "u", ""),
])
def test_bad_ice_servers_are_refused(url: str, user: str, cred: str) -> None:
    with pytest.raises(ValueError, match="ICE server|TURN server"):
        IceServer(url, user, cred)


async def test_a_loopback_connection_is_direct() -> None:
    a, b, _, _ = await connect_pair()
    try:
        assert a.path == b.path == "direct"
    finally:
        await asyncio.gather(a.close(), b.close())

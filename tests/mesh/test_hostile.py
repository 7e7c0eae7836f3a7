"""Hostile input at a live sentinel: forged records and signals, replayed joins and offers,
truncated and oversized frames. Each is refused and logged; the node keeps serving."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

import pytest

from hive_core.base.health import HealthRecord
from hive_core.base.identity import Identity, node_id_of
from hive_core.mesh.dht import RecordKind, make_record, node_key
from hive_core.mesh.events import FrameRejected
from hive_core.mesh.status import fetch_status
from hive_core.mesh.wschannel import WsChannel, ws_connect
from hive_core.protocol import (
    Error,
    ErrorCode,
    FindNode,
    FindValue,
    Hello,
    Nodes,
    Ping,
    Signal,
    SignalKind,
    Store,
    Stored,
    decode,
    encode,
    make_hello,
    make_signal,
)

from .conftest import Hive, wait_for

pytestmark = [pytest.mark.net, pytest.mark.timeout(60)]

HEALTH = HealthRecord(tflops=9.0, battery_pct=None, on_ac=True, rtt_median_ms=None, uptime_s=1.0,
                      success_rate=1.0, free_ram_mb=1.0, temperature_c=None, measured_at_ms=0)


async def join_raw(url: str, me: Identity) -> tuple[WsChannel, Hello, bytes]:
    """Join by hand: read the listener's Hello, answer with ours (returned for replaying)."""
    channel = await ws_connect(url)
    theirs = decode(await channel.recv())
    assert isinstance(theirs, Hello)
    hello = encode(make_hello(me, audience=node_id_of(theirs.public_key)))
    await channel.send(hello)
    return channel, theirs, hello


async def answer_to_us(channel: WsChannel) -> object:
    """The next frame that answers us, skipping the sentinel's own DHT requests: to it,
    mallory is a peer like any other, so its upkeep may ask mallory things (or offer it a
    data channel) meanwhile."""
    while True:
        msg = decode(await asyncio.wait_for(channel.recv(), 5))
        if not isinstance(msg, (FindNode, FindValue, Ping, Store, Signal)):
            return msg


async def ask(channel: WsChannel, msg: object) -> object:
    await channel.send(encode(msg))
    return await answer_to_us(channel)


async def test_hostile_frames_are_refused_logged_and_the_sentinel_keeps_serving(
    hive: Hive, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    sentinel = await hive.sentinel()
    (honest,) = await hive.join([sentinel.listen_url], 1)
    events = sentinel.node.events()
    rejected: list[FrameRejected] = []

    async def collect() -> None:
        async for event in events:
            if isinstance(event, FrameRejected):
                rejected.append(event)

    collector = asyncio.ensure_future(collect())
    mallory = Identity.from_seed(b"m" * 32)
    channel, _, hello = await join_raw(sentinel.listen_url, mallory)
    await wait_for(lambda: sentinel.node.peers.best(mallory.node_id) is not None, 5,
                   "mallory's link")

    # Replayed join: the same signed Hello on a new connection is refused.
    replay = await ws_connect(sentinel.listen_url)
    await replay.recv()
    await replay.send(hello)
    refusal = decode(await asyncio.wait_for(replay.recv(), 5))
    assert isinstance(refusal, Error) and refusal.code == ErrorCode.REPLAYED
    assert "replayed hello" in caplog.text
    await replay.close()

    # Forged records: someone else's key, and a genuine record with a tampered value.
    now = time.time()
    stolen_key = make_record(mallory, node_key(honest.node_id, RecordKind.HEALTH), HEALTH,
                             seq=1 << 50, ttl_s=4, now_s=now)
    reply = await ask(channel, Store(1, stolen_key))
    assert isinstance(reply, Stored) and not reply.accepted
    assert "does not belong" in reply.reason
    genuine = sentinel.dht.store.get(node_key(honest.node_id, RecordKind.HEALTH), now)[0]
    tampered = replace(genuine, seq=genuine.seq + 1, value=genuine.value[:-1] + b"\x7f")
    reply = await ask(channel, Store(2, tampered))
    assert isinstance(reply, Stored) and not reply.accepted and "forged" in reply.reason
    assert "refused record" in caplog.text

    # Truncated, unknown-version and trailing-garbage frames: MALFORMED, link stays up.
    frame = encode(FindNode(3, honest.node_id))
    for bad in (frame[:-4], b"\x09" + frame[1:], frame + b"\x00", b""):
        await channel.send(bad)
        answer = await answer_to_us(channel)
        assert isinstance(answer, Error) and answer.code == ErrorCode.MALFORMED, bad[:8]

    # Forged signal (claims to come from the honest node) and a replayed offer.
    forged = replace(make_signal(mallory, to_id=sentinel.node_id, kind=SignalKind.OFFER,
                                 sdp="v=0\r\n", session=5), from_id=honest.node_id)
    await channel.send(encode(forged))
    offer = make_signal(mallory, to_id=sentinel.node_id, kind=SignalKind.OFFER,
                        sdp="v=0\r\nnot an sdp\r\n", session=6)
    await channel.send(encode(offer))
    await channel.send(encode(offer))
    await wait_for(lambda: sum("signal" in e.reason for e in rejected) >= 3, 5,
                   "three refused signals")
    reasons = " | ".join(e.reason for e in rejected)
    assert "does not match from_id" in reasons
    assert "replayed offer" in reasons
    assert "no data channel" in reasons  # the unusable SDP, refused before any RTC work

    # After all that, the same link still gets answers and honest nodes are still served.
    reply = await ask(channel, FindNode(7, honest.node_id))
    assert isinstance(reply, Nodes) and honest.node_id in {c.node_id for c in reply.contacts}
    assert sentinel.node.rejected_frames >= 8

    # Oversized frame: websockets refuses it (over 256 KiB) and closes that one connection.
    await channel.send(bytes(200_000))  # under the limit: just garbage, answered MALFORMED
    assert isinstance(await answer_to_us(channel), Error)
    await channel._conn.send(bytes(300_000))  # past our own size check, as an attacker would
    await wait_for(lambda: sentinel.node.peers.best(mallory.node_id) is None, 5,
                   "the oversized sender's link to close")
    assert "oversized frame" in caplog.text
    view = await fetch_status(sentinel.listen_url, timeout_s=5)
    assert {n["id"] for n in view["nodes"]} == {sentinel.node_id.hex(), honest.node_id.hex()}
    assert sentinel.node_id in {lk.node_id for lk in honest.node.peers.rtc_links()}
    collector.cancel()

"""The node runtime API that shard servers and world sync build on, over a real data channel."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated, Any

import numpy as np
import pytest

from hive_core.mesh.events import PeerConnected, PeerLost
from hive_core.mesh.hivenode import HiveNode
from hive_core.mesh.node import PeerUnavailable
from hive_core.mesh.rtc import MAX_MESSAGE_BYTES, MessageTooLarge, RTCChannel
from hive_core.protocol import Text, UInt, WireTensor, message

from .conftest import Hive, wait_for

pytestmark = [pytest.mark.net, pytest.mark.timeout(60)]


class ProbeMsgType(IntEnum):
    """A message family for this test, in the experiments range (0xE0-0xFF)."""

    ECHO = 0xE0
    ECHOED = 0xE1


@message(ProbeMsgType.ECHO)
@dataclass(frozen=True)
class Echo:
    rpc_id: Annotated[int, UInt(8)]
    text: Annotated[str, Text(64)]


@message(ProbeMsgType.ECHOED)
@dataclass(frozen=True)
class Echoed:
    rpc_id: Annotated[int, UInt(8)]
    text: Annotated[str, Text(64)]


async def pair(hive: Hive, **overrides: object) -> tuple[HiveNode, HiveNode]:
    a = await hive.sentinel()
    (b,) = await hive.join([a.listen_url], 1, **overrides)
    await wait_for(lambda: b.node_id in a.node.peers and a.node_id in b.node.peers, 10,
                   "a data channel between the two")
    return a, b


async def test_request_handlers_tensors_and_named_channels(hive: Hive) -> None:
    a, b = await pair(hive)

    async def echo(peer: bytes, msg: Echo) -> None:
        await b.node.send(peer, Echoed(msg.rpc_id, msg.text.upper()))

    b.node.on(Echo, echo)
    a.node.register_reply(Echoed)
    reply = await a.node.request(b.node_id, Echo(a.node.next_rpc_id(), "hello hive"))
    assert reply == Echoed(reply.rpc_id, "HELLO HIVE")

    # A tensor of 1.2 MB travels as chunks under the 256 KiB limit and arrives exact.
    got: asyncio.Future[tuple[bytes, WireTensor]] = asyncio.get_running_loop().create_future()
    b.node.on_tensor(lambda peer, t: got.done() or got.set_result((peer, t)))
    array = np.arange(300_000, dtype=np.float32).reshape(600, 500) / 7
    await a.node.send_tensor(b.node_id, array, stream_id=9, sequence=3, layer=12)
    peer, tensor = await asyncio.wait_for(got, 10)
    assert peer == a.node_id and (tensor.stream_id, tensor.sequence, tensor.layer) == (9, 3, 12)
    np.testing.assert_array_equal(tensor.to_numpy(), array)

    # A named channel beside the main one (world sync opens "crdt" this way).
    async def serve(peer: bytes, channel: RTCChannel) -> None:
        async for data in channel:
            await channel.send(data[::-1])

    b.node.on_channel("crdt", serve)
    crdt = await a.node.open_channel(b.node_id, "crdt")
    await crdt.send(b"abc")
    assert await asyncio.wait_for(crdt.recv(), 5) == b"cba"
    with pytest.raises(MessageTooLarge):
        await crdt.send(bytes(MAX_MESSAGE_BYTES + 1))
    await crdt.close()


async def test_unknown_peers_unanswered_requests_and_link_events(hive: Hive) -> None:
    a, b = await pair(hive)
    with pytest.raises(PeerUnavailable, match="no link"):
        await a.node.send(b"\x01" * 20, Echo(1, "x"))
    a.node.register_reply(Echoed)
    with pytest.raises(PeerUnavailable, match="no reply in time"):
        await a.node.request(b.node_id, Echo(a.node.next_rpc_id(), "nobody answers"),
                             timeout=0.5)
    info = {p.node_id: p for p in a.node.peers_info()}[b.node_id]
    assert info.kind == "rtc" and info.rtt_ms is not None and info.pongs >= 1

    events = a.node.events()
    third = (await hive.join([a.listen_url], 1, first_seed=30, listen=False))[0]
    kinds: list[Any] = []
    async for event in events:
        if getattr(event, "node_id", None) == third.node_id:
            kinds.append(event)
            if isinstance(event, PeerLost):
                break
            if isinstance(event, PeerConnected) and event.kind == "rtc":
                await third.close()
    assert isinstance(kinds[-1], PeerLost)
    assert any(isinstance(e, PeerConnected) and e.kind == "rtc" for e in kinds)


async def test_glare_both_ends_offer_at_once_and_one_link_results(hive: Hive) -> None:
    # No upkeep round (which heals missing links) during this test: the race is ours to run.
    quiet = {"record_ttl_s": 600.0, "republish_s": 300.0}
    a, b = await pair(hive, **quiet)
    (c,) = await hive.join([a.listen_url], 1, first_seed=40, **quiet)
    await wait_for(lambda: c.node_id in b.node.peers, 10, "the b-c data channel")
    await b.node.drop(c.node_id, "test: forget c")
    await wait_for(lambda: b.node_id not in c.node.peers, 10, "c to see the link close")
    # Both offer through the sentinel at the same time; the lower id's offer wins.
    lb, lc = await asyncio.wait_for(
        asyncio.gather(b.signaler.connect(c.node_id), c.signaler.connect(b.node_id)), 20)
    assert lb.node_id == c.node_id and lc.node_id == b.node_id
    assert b.node.peers.rtc(c.node_id) is lb and c.node.peers.rtc(b.node_id) is lc
    assert a.signaler.relayed >= 2
    await b.node.send(c.node_id, Echo(5, "still there"))

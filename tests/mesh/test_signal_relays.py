"""Signaling to a node we are not linked to: greedy XOR routing can dead-end, so the offer
goes through a relay named in the target's signed reach record (real aiortc on loopback)."""

from __future__ import annotations

import asyncio

import pytest

from hive_core.mesh.hivenode import HiveNode
from hive_core.mesh.wschannel import ws_connect

from .conftest import Hive, wait_for

pytestmark = [pytest.mark.net, pytest.mark.timeout(90)]


async def ws_link(a: HiveNode, b: HiveNode) -> None:
    channel = await ws_connect(b.listen_url, timeout=5)
    await a.node.attach(channel, kind="ws", expect=b.node_id, mode="second")


async def test_offer_goes_through_the_reach_record_relay_where_greedy_dead_ends(
        hive: Hive) -> None:
    # No join, no upkeep during the test: the topology is exactly what we build.
    made = [hive.make(seed=200 + i, listen="127.0.0.1:0", republish_s=60.0, record_ttl_s=240.0)
            for i in range(4)]
    await asyncio.gather(*(n.start() for n in made))
    target, asker, x, y = made
    # Of the two relays, the one XOR-closer to the target is the dead end (greedy's choice).
    dead, relay = sorted((x, y), key=lambda n: int.from_bytes(n.node_id, "big")
                         ^ int.from_bytes(target.node_id, "big"))
    await ws_link(relay, target)
    await relay.signaler.connect(target.node_id)  # a data channel: the target's reach relay
    await target.publish()  # its reach record (relay included) is now stored at the relay
    assert relay.node_id in target.reach().relays
    await ws_link(asker, dead)
    await ws_link(asker, relay)
    assert asker.node.peers.best(target.node_id) is None
    assert [lk.node_id for lk in dead.node.peers.all()] == [asker.node_id]
    link = await asyncio.wait_for(asker.signaler.connect(target.node_id), 20)
    assert link.kind == "rtc" and link.node_id == target.node_id
    await wait_for(lambda: target.node.peers.rtc(asker.node_id) is not None, 10,
                   "the target's side of the link")
    assert relay.signaler.relayed >= 2 and dead.signaler.relayed == 0  # offer and answer

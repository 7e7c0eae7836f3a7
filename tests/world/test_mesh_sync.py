"""World sync across a real hive: HiveNodes on loopback, aiortc data channels, MeshSync."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import pytest

from hive_core.base.identity import Identity
from hive_core.mesh.hivenode import HiveNode
from hive_core.mesh.node import NodeConfig
from hive_core.mesh.rtc import RTCOptions
from world.model import City
from world.model.mesh import MeshSync

from .test_provider import converged, wait_for

pytestmark = [pytest.mark.net, pytest.mark.timeout(120)]

# Short timers; tflops given so no start-up benchmark runs.
FAST = NodeConfig(rtc=RTCOptions.loopback(connect_timeout_s=8.0), roles=("alpha", "beta"),
                  ping_interval_s=0.3, dead_after_s=3.0, handshake_timeout_s=5.0,
                  request_timeout_s=3.0, record_ttl_s=4.0, republish_s=1.0, tflops=1.0)


async def test_cities_sync_over_the_hive_mesh() -> None:
    for name in ("aioice", "aiortc", "websockets"):
        logging.getLogger(name).setLevel(logging.WARNING)
    idents = [Identity.from_seed(bytes([60 + i]) * 32) for i in range(3)]
    sentinel = HiveNode(idents[0], replace(FAST, listen="127.0.0.1:0"))
    nodes = [sentinel]
    syncs: list[MeshSync] = []
    try:
        await asyncio.wait_for(sentinel.start(), 20)
        for ident in idents[1:]:
            nodes.append(HiveNode(ident, replace(FAST, join=(sentinel.listen_url,),
                                                 listen="127.0.0.1:0")))
        await asyncio.wait_for(asyncio.gather(*(n.start() for n in nodes[1:])), 40)
        ids = {n.node_id for n in nodes}
        await wait_for(lambda: all({lk.node_id for lk in n.node.peers.rtc_links()}
                                   == ids - {n.node_id} for n in nodes), 20, "rtc mesh")
        # Each node's player is the node itself: same key, so districts are theirs.
        cities = [City(ident) for ident in idents]
        cities[0].claim_district(role="sentinel")
        for n, city in zip(nodes, cities, strict=True):
            sync = MeshSync(n.node, city, interval_s=0.2)
            sync.start()
            syncs.append(sync)
        for k, city in enumerate(cities):
            city.place_building("tower", (float(k), 0.0, 0.0))
        await wait_for(lambda: converged(cities) and len(cities[0].buildings()) == 3, 20,
                       "cities to converge over the mesh")
        assert all(len(s.providers) == 2 for s in syncs)
        assert cities[2].districts()[cities[0].player_id].role == "sentinel"
        # A node leaves: its peers stop syncing with it and go on with each other.
        await nodes[2].close()
        await wait_for(lambda: all(len(s.providers) == 1 for s in syncs[:2]), 15,
                       "providers of the lost link to stop")
        b = cities[1].place_building("park", (9.0, 9.0, 0.0))
        await wait_for(lambda: b in cities[0].buildings(), 10, "sync after a node left")
    finally:
        for s in syncs:
            await s.stop()
        await asyncio.wait_for(asyncio.gather(*(n.close() for n in nodes),
                                              return_exceptions=True), 20)

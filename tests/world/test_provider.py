"""The sync provider over channels: in-memory with faults, and real aiortc on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from hive_core.mesh.memchannel import LinkProfile, memory_pair
from world.model import City
from world.model.provider import SyncProvider
from world.model.yproto import Edits, SyncStep1, decode, encode

from .conftest import player

LOSSY = LinkProfile(latency_s=0.003, jitter_s=0.004, loss=0.2, duplicate=0.1, reorder=0.2)


async def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def link(a: City, b: City, profile: LinkProfile, seed: int,
         interval_s: float = 0.05) -> list[SyncProvider]:
    ca, cb = memory_pair("crdt", profile, seed=seed)
    return [SyncProvider(a, ca, interval_s=interval_s), SyncProvider(b, cb, interval_s=interval_s)]


def converged(cities: list[City]) -> bool:
    first = cities[0].to_json()
    return all(c.to_json() == first for c in cities[1:])


async def test_three_peers_converge_over_lossy_links() -> None:
    cities = [City(player(n)) for n in (1, 2, 3)]
    providers = [p for i in range(3) for j in range(i + 1, 3)
                 for p in link(cities[i], cities[j], LOSSY, seed=10 * i + j)]
    for p in providers:
        p.start()
    try:
        for k in range(15):
            for c in cities:
                b = c.place_building("house", (float(k), 0.0, 0.0))
                c.move(b, (float(k), 2.0, 0.0))
            await asyncio.sleep(0.002)
        await wait_for(lambda: converged(cities), 10.0, "convergence")
        assert all(len(c.buildings()) == 45 for c in cities)
        assert sum(p.stats.rejected for p in providers) == 0
        # No echo storm: once quiet (answers in flight have landed), rounds carry state
        # vectors and nothing else, so no edit arrives again.
        await asyncio.sleep(0.3)
        before = [p.stats.accepted + p.stats.duplicates for p in providers]
        await asyncio.sleep(0.5)
        assert [p.stats.accepted + p.stats.duplicates for p in providers] == before
    finally:
        for p in providers:
            await p.stop()


async def test_chain_topology_relays_through_rounds() -> None:
    """A-B-C: A's edits reach C only through B's answers to C's state vector."""
    a, b, c = (City(player(n)) for n in (4, 5, 6))
    providers = link(a, b, LOSSY, 1) + link(b, c, LOSSY, 2)
    for p in providers:
        p.start()
    try:
        for k in range(10):
            a.place_building("tower", (float(k), 0.0, 0.0))
            c.place_building("park", (float(k), 5.0, 0.0))
        await wait_for(lambda: converged([a, b, c]), 10.0, "convergence")
        assert len(c.buildings()) == 20
    finally:
        for p in providers:
            await p.stop()


async def test_large_sync_stays_below_the_message_limit() -> None:
    big, fresh = City(player(7)), City(player(8))
    for k in range(2500):
        big.place_building("house", (float(k % 50), float(k // 50), 0.0))
    ca, cb = memory_pair("crdt", LinkProfile(), seed=3)
    sizes: list[int] = []
    orig = ca.send

    async def send(data: bytes) -> None:
        sizes.append(len(data))
        decode(data)  # every message is well formed on its own
        await orig(data)

    ca.send = send  # type: ignore[method-assign]
    providers = [SyncProvider(big, ca, interval_s=0.5), SyncProvider(fresh, cb, interval_s=0.5)]
    for p in providers:
        p.start()
    try:
        await wait_for(lambda: len(fresh.buildings()) == 2500, 20.0, "initial sync")
        assert fresh.to_json() == big.to_json()
        assert sum(sizes) > 256 * 1024 and max(sizes) < 256 * 1024
    finally:
        for p in providers:
            await p.stop()


async def test_presence_and_bad_messages() -> None:
    a, b = City(player(1)), City(player(2))
    ca, cb = memory_pair("crdt", LinkProfile(), seed=4)
    pa, pb = SyncProvider(a, ca, interval_s=0.05), SyncProvider(b, cb, interval_s=0.05)
    pa.start()
    pb.start()
    try:
        pa.set_presence({"name": "alice", "cursor": [1.0, 2.0]})
        await wait_for(lambda: a.client_id in pb.presence, 5.0, "presence")
        assert pb.presence[a.client_id]["cursor"] == [1.0, 2.0]
        pa.set_presence(None)
        await wait_for(lambda: a.client_id not in pb.presence, 5.0, "leave")
        # Garbage, raw unsigned Yjs updates and forged edits are refused; sync goes on.
        for junk in (b"\x07\x07", b"\x00\x02\x01\x00", encode(Edits((b"x" * 120,)))):
            await ca.send(junk)
        await wait_for(lambda: pb.stats.protocol_errors == 2 and pb.stats.rejected == 1, 5.0,
                       "errors counted")
        b_id = a.place_building("house", (0.0, 0.0, 0.0))
        await wait_for(lambda: b_id in b.buildings(), 5.0, "edit after junk")
        assert isinstance(decode(b"\x00\x00\x01\x00"), SyncStep1)
    finally:
        await pa.stop()
        await pb.stop()


@pytest.mark.net
async def test_two_peers_sync_over_real_aiortc() -> None:
    from hive_core.mesh.rtc import RTCOptions, connect_pair

    opts = RTCOptions.loopback(connect_timeout_s=10.0)
    ra, rb, _, _ = await asyncio.wait_for(connect_pair(opts, opts), 30)
    a, b = City(player(1)), City(player(2))
    try:
        ch_a, ch_b = await asyncio.wait_for(
            asyncio.gather(ra.open_channel("crdt"), rb.accept_channel("crdt", timeout=10)), 20)
        a.place_building("house", (0.0, 0.0, 0.0))  # before the link: sent by step 2
        async with SyncProvider(a, ch_a, interval_s=0.2), SyncProvider(b, ch_b, interval_s=0.2):
            for k in range(20):
                a.place_building("tower", (float(k), 1.0, 0.0))
                b.place_building("park", (float(k), 2.0, 0.0))
            await wait_for(lambda: converged([a, b]) and len(a.buildings()) == 41, 15.0,
                           "aiortc sync")
    finally:
        await asyncio.gather(ra.close(), rb.close(), return_exceptions=True)

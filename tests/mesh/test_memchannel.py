"""The in-memory channel delivers, delays, drops, duplicates and closes as configured."""

import asyncio

import pytest

from hive_core.mesh.channel import Channel, ChannelClosed
from hive_core.mesh.memchannel import LinkProfile, memory_pair


async def test_messages_arrive_in_order_on_a_clean_link() -> None:
    a, b = memory_pair()
    assert isinstance(a, Channel)
    for i in range(5):
        await a.send(bytes([i]))
    got = [await b.recv() for _ in range(5)]
    assert got == [bytes([i]) for i in range(5)]


async def test_latency_delays_delivery() -> None:
    a, b = memory_pair(profile=LinkProfile(latency_s=0.05))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await a.send(b"x")
    assert await b.recv() == b"x"
    assert loop.time() - t0 >= 0.045


async def test_unreliable_loss_drops_and_reliable_loss_retransmits() -> None:
    a, b = memory_pair(profile=LinkProfile(loss=0.5), seed=1)
    for i in range(200):
        await a.send(i.to_bytes(2, "big"))
    await asyncio.sleep(0.01)
    assert 50 < b._inbox.qsize() < 150

    a, b = memory_pair(profile=LinkProfile(loss=0.3, reliable=True, ordered=True, rto_s=0.01), seed=2)
    for i in range(50):
        await a.send(i.to_bytes(2, "big"))
    got = [int.from_bytes(await b.recv(), "big") for _ in range(50)]
    assert got == list(range(50))


async def test_duplication_delivers_twice() -> None:
    a, b = memory_pair(profile=LinkProfile(duplicate=1.0))
    await a.send(b"d")
    assert [await b.recv(), await b.recv()] == [b"d", b"d"]


async def test_close_ends_both_sides() -> None:
    a, b = memory_pair()
    await a.send(b"last")
    await a.close()
    assert b.closed
    with pytest.raises(ChannelClosed):
        await a.send(b"more")
    assert [m async for m in b] in ([], [b"last"])

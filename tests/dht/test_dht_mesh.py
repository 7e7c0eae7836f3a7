"""A DHT of real DhtNodes talking the wire codec over in-memory channels."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import replace

import pytest

from hive_core.base.health import HealthRecord
from hive_core.base.identity import Identity
from hive_core.mesh.dht import (
    ChannelRpc,
    DhtConfig,
    DhtNode,
    LayerSpanRecord,
    RecordKind,
    RpcEndpoint,
    RpcError,
    decode_value,
    layer_key,
    make_record,
    next_rpc_id,
    node_key,
)
from hive_core.mesh.memchannel import LinkProfile, MemoryChannel, memory_pair
from hive_core.protocol import Contact, FindValue, Store, Stored, Value

CONFIG = DhtConfig(k=8, alpha=3, rpc_timeout_s=0.5, record_ttl_s=30.0, republish_s=10.0)


def health(i: int) -> HealthRecord:
    return HealthRecord(tflops=0.1 * i, battery_pct=None, on_ac=True, rtt_median_ms=None,
                        uptime_s=float(i), success_rate=1.0, free_ram_mb=1000.0,
                        temperature_c=None, measured_at_ms=0)


class MemoryMesh:
    """Nodes that open an in-memory channel to a peer on first request."""

    def __init__(self, profile: LinkProfile | None = None, seed: int = 0) -> None:
        self.profile = profile or LinkProfile(latency_s=0.001)
        self.rng = random.Random(seed)
        self.nodes: dict[bytes, DhtNode] = {}
        self.dead: set[bytes] = set()
        self.channels: dict[bytes, list[MemoryChannel]] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.skew = 0.0  # seconds added to every node's wall clock

    def add(self, i: int) -> DhtNode:
        ident = Identity.from_seed(i.to_bytes(32, "big"))
        node: DhtNode
        rpc = ChannelRpc(connect=lambda c: self._connect(node, c))
        node = DhtNode(ident, f"mem:{i}", rpc, config=CONFIG,
                       clock=lambda: time.time() + self.skew, rng=random.Random(i))
        self.nodes[node.node_id] = node
        return node

    async def _connect(self, me: DhtNode, contact: Contact) -> RpcEndpoint:
        peer = self.nodes.get(contact.node_id)
        if peer is None or contact.node_id in self.dead or me.node_id in self.dead:
            raise ConnectionError("unreachable")
        a, b = memory_pair(profile=self.profile, seed=self.rng.getrandbits(32))
        mine = RpcEndpoint(a, peer.contact, me.handle, timeout_s=CONFIG.rpc_timeout_s)
        theirs = RpcEndpoint(b, me.contact, peer.handle, timeout_s=CONFIG.rpc_timeout_s)
        assert isinstance(peer.rpc, ChannelRpc)
        peer.rpc.add(theirs)
        self.channels.setdefault(me.node_id, []).append(a)
        self.channels.setdefault(peer.node_id, []).append(b)
        self.tasks += [asyncio.ensure_future(mine.serve()), asyncio.ensure_future(theirs.serve())]
        return mine

    async def kill(self, node: DhtNode) -> None:
        self.dead.add(node.node_id)
        for ch in self.channels.get(node.node_id, []):
            await ch.close()

    async def build(self, n: int) -> list[DhtNode]:
        nodes = [self.add(i) for i in range(n)]
        for node in nodes[1:]:
            await node.bootstrap([nodes[0].contact])
        return nodes

    async def close(self) -> None:
        for chans in self.channels.values():
            for ch in chans:
                await ch.close()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@pytest.fixture
async def mesh() -> object:
    m = MemoryMesh()
    yield m
    await m.close()


async def test_nodes_join_publish_and_find_each_other(mesh: MemoryMesh) -> None:
    nodes = await mesh.build(24)
    assert all(len(n.routing) >= CONFIG.k for n in nodes)
    await asyncio.gather(*(n.publish(health(i)) for i, n in enumerate(nodes)))
    rng = random.Random(3)
    for _ in range(20):
        asker, owner = rng.sample(range(len(nodes)), 2)
        found = await nodes[asker].find_value(node_key(nodes[owner].node_id, RecordKind.HEALTH))
        assert found.found, f"node {asker} did not find node {owner}'s health"
        assert decode_value(found.records[0]) == health(owner)
        assert found.hops <= 4
    target = nodes[5].node_id
    result = await nodes[17].find_node(target)
    assert result.contacts[0].node_id == target


async def test_layer_servers_are_all_found_by_an_exhaustive_lookup(mesh: MemoryMesh) -> None:
    nodes = await mesh.build(16)
    spans = [LayerSpanRecord("smol", 0, 10, 30), LayerSpanRecord("smol", 5, 20, 30),
             LayerSpanRecord("smol", 4, 6, 30)]
    for node, span in zip(nodes[1:4], spans, strict=True):
        await node.publish(span)
    found = await nodes[12].find_value(layer_key("smol", 5), exhaustive=True)
    assert sorted(decode_value(r).start for r in found.records) == [0, 4, 5]
    none = await nodes[12].find_value(layer_key("smol", 25))
    assert not none.found


async def test_forged_store_and_garbage_frames_are_refused_and_the_node_keeps_serving(
    mesh: MemoryMesh, caplog: pytest.LogCaptureFixture
) -> None:
    nodes = await mesh.build(6)
    victim, owner = nodes[1], nodes[2]
    mallory = Identity.from_seed(b"M" * 32)
    forged = make_record(mallory, node_key(owner.node_id, RecordKind.HEALTH), health(666),
                         seq=10**12, ttl_s=30, now_s=time.time())
    a, b = memory_pair()
    mallory_contact = Contact(mallory.node_id, mallory.public_key, "mem:mallory")
    server = RpcEndpoint(b, mallory_contact, victim.handle)
    client = RpcEndpoint(a, victim.contact, victim.handle)
    tasks = [asyncio.ensure_future(server.serve()), asyncio.ensure_future(client.serve())]
    with caplog.at_level(logging.WARNING):
        reply = await client.request(Store(next_rpc_id(), forged))
        assert isinstance(reply, Stored) and not reply.accepted
        assert "does not belong to" in reply.reason
        for junk in (b"", b"\x01", b"\x01\x12" + bytes(5), b"\x07\x03", bytes(300_000)):
            await a.send(junk)
        await owner.publish(health(2))
        ok = await client.request(FindValue(next_rpc_id(), node_key(owner.node_id,
                                                                    RecordKind.HEALTH)))
    assert isinstance(ok, Value)
    assert [decode_value(r) for r in ok.records] in ([health(2)], [])
    assert server.malformed == 5
    assert "dropped malformed frame" in caplog.text and "refused record" in caplog.text
    await a.close()
    await asyncio.gather(*tasks)


async def test_forged_value_in_a_reply_is_dropped_by_the_asker(mesh: MemoryMesh) -> None:
    nodes = await mesh.build(6)
    honest, liar = nodes[1], nodes[4]
    key = node_key(honest.node_id, RecordKind.HEALTH)
    real = make_record(honest.identity, key, health(1), seq=1, ttl_s=30, now_s=time.time())
    liar.store._data[key] = {honest.node_id: replace(real, value=real.value[:-1] + b"\x01")}
    found = await nodes[0].find_value(key)
    assert not found.found
    assert sum(n.forged_seen for n in nodes) >= 1


async def test_killed_node_is_evicted_and_its_records_expire(mesh: MemoryMesh) -> None:
    nodes = await mesh.build(16)
    await asyncio.gather(*(n.publish(health(i)) for i, n in enumerate(nodes)))
    victim = nodes[7]
    await mesh.kill(victim)
    for node in nodes:
        if node is not victim and victim.node_id in node.routing:
            with pytest.raises(RpcError):
                await node.ping(victim.contact)
            assert victim.node_id not in node.routing
    # 40 s later: survivors republished (ttl 30 s, republish 10 s), the dead node did not
    for _ in range(4):
        mesh.skew += 10.0
        await asyncio.gather(*(n.maintain_once() for n in nodes if n is not victim))
    gone = await nodes[0].find_value(node_key(victim.node_id, RecordKind.HEALTH))
    assert not gone.found
    alive = await nodes[0].find_value(node_key(nodes[3].node_id, RecordKind.HEALTH))
    assert alive.found and decode_value(alive.records[0]) == health(3)


async def test_lookups_succeed_over_a_lossy_jittery_link() -> None:
    mesh = MemoryMesh(LinkProfile(latency_s=0.005, jitter_s=0.005, loss=0.05, reliable=True,
                                  ordered=True, rto_s=0.05, duplicate=0.02), seed=1)
    try:
        nodes = await mesh.build(12)
        await asyncio.gather(*(n.publish(health(i)) for i, n in enumerate(nodes)))
        for i in range(1, 12, 3):
            found = await nodes[0].find_value(node_key(nodes[i].node_id, RecordKind.HEALTH))
            assert found.found
    finally:
        await mesh.close()


async def test_background_maintenance_starts_and_stops(mesh: MemoryMesh) -> None:
    nodes = await mesh.build(4)
    node = nodes[2]
    # Bootstrap already timed every contact over the 1 ms links (RTT >= 2 ms, < the 0.5 s
    # rpc timeout). A sample of 4 ms, as this test once fed, is slower than those and so
    # never made nodes[0] the nearest: which peer came first depended on scheduling noise.
    # Transport pings reporting a much faster path must win once the EWMA has absorbed them.
    for _ in range(20):
        node.observe_rtt(nodes[0].node_id, 0.0001)
    assert node.routing.rtt(nodes[0].node_id) < 0.002
    assert node.routing.nearby(1)[0].contact.node_id == nodes[0].node_id
    node.start(period_s=0.01)
    await asyncio.sleep(0.05)
    await node.stop()
    assert node._maintenance is None
    node.remove_contact(nodes[0].node_id)
    assert nodes[0].node_id not in node.routing
    assert len(await nodes[1].get(node_key(nodes[3].node_id, RecordKind.HEALTH))) == 0

"""A real hive on loopback: aiortc data channels, WebSocket sentinel, DHT records, churn."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import pytest

from hive_core.base.health import HealthRecord
from hive_core.mesh.dht import (
    LayerSpanRecord,
    ReachRecord,
    RecordKind,
    Role,
    RolesRecord,
    decode_value,
    layer_key,
    node_key,
    owner_of,
)
from hive_core.mesh.events import PeerLost
from hive_core.mesh.hivenode import HiveNode
from hive_core.mesh.joining import JoinFailed
from hive_core.mesh.status import fetch_status

from .conftest import Hive, wait_for

pytestmark = [pytest.mark.net, pytest.mark.timeout(120)]


def rtc_peers(node: HiveNode) -> set[bytes]:
    return {lk.node_id for lk in node.node.peers.rtc_links()}


async def test_nodes_join_through_a_sentinel_and_keep_joining_after_it_stops(hive: Hive) -> None:
    sentinel = await hive.sentinel()
    nodes = await hive.join([sentinel.listen_url], 4)
    everyone = [sentinel, *nodes]
    ids = {n.node_id for n in everyone}
    # The mesh: every node has a data channel to every other (5 nodes < max_peers).
    await wait_for(lambda: all(rtc_peers(n) == ids - {n.node_id} for n in everyone), 30,
                   "a full mesh of data channels")
    # Joiners drop their WebSocket to the sentinel once its data channel is up: any WebSocket
    # left is a direct link to a peer on this machine (hive_core.mesh.lan), not the entry.
    assert all(lk.kind == "rtc" or lk.lan for n in nodes for lk in n.node.peers.all())
    assert all(n.entry is not None and n.entry.channel.closed for n in nodes)
    # Every node published its records; any node finds any other's in the DHT.
    for asker, owner in [(nodes[0], nodes[3]), (nodes[2], sentinel), (sentinel, nodes[1])]:
        health = await asker.dht.get(node_key(owner.node_id, RecordKind.HEALTH))
        roles = await asker.dht.get(node_key(owner.node_id, RecordKind.ROLES))
        reach = await asker.dht.get(node_key(owner.node_id, RecordKind.REACH))
        assert isinstance(decode_value(health[0]), HealthRecord)
        assert Role.ALPHA in decode_value(roles[0]).roles
        reach_value = decode_value(reach[0])
        assert isinstance(reach_value, ReachRecord)
        assert reach_value.addresses == (owner.listen_url,)
    sentinel_roles = decode_value((await nodes[1].dht.get(
        node_key(sentinel.node_id, RecordKind.ROLES)))[0])
    assert isinstance(sentinel_roles, RolesRecord) and Role.SENTINEL in sentinel_roles.roles

    # The sentinel leaves; the mesh stays.
    await sentinel.close()
    await wait_for(lambda: all(sentinel.node_id not in rtc_peers(n) for n in nodes), 10,
                   "the nodes to notice the sentinel left")
    relayed_before = nodes[1].signaler.relayed
    # A fifth node: the sentinel URL is dead, so it enters through node 1 and gets its
    # other data channels signaled through that mesh peer.
    fifth = (await hive.join([sentinel.listen_url, nodes[1].listen_url], 1, first_seed=50))[0]
    assert fifth.entry is not None and fifth.entry.node_id == nodes[1].node_id
    remaining = {n.node_id for n in nodes}
    await wait_for(lambda: rtc_peers(fifth) == remaining, 30, "the fifth node's data channels")
    assert nodes[1].signaler.relayed - relayed_before >= 3
    found = await nodes[3].dht.get(node_key(fifth.node_id, RecordKind.HEALTH))
    assert found and isinstance(decode_value(found[0]), HealthRecord)
    seen_by_fifth = await fifth.dht.get(node_key(nodes[0].node_id, RecordKind.ROLES))
    assert seen_by_fifth


async def test_a_lost_link_between_live_nodes_is_healed(hive: Hive) -> None:
    sentinel = await hive.sentinel()
    b, c = await hive.join([sentinel.listen_url], 2)
    await wait_for(lambda: c.node_id in rtc_peers(b), 30, "the b-c data channel")
    await b.node.drop(c.node_id, "test: a transient failure")
    await wait_for(lambda: b.node_id not in rtc_peers(c), 10, "c to see the link close")
    assert c.node_id not in b.dht.routing  # forgotten: only a lookup can bring it back
    # The next upkeep round looks b (and c) up and reopens the data channel.
    await wait_for(lambda: c.node_id in rtc_peers(b) and b.node_id in rtc_peers(c), 30,
                   "the healed b-c data channel")


async def test_join_fails_cleanly_when_no_entry_answers(hive: Hive) -> None:
    lonely = hive.make(seed=7, join=("ws://127.0.0.1:9",))
    with pytest.raises(JoinFailed, match="could not join the hive"):
        await asyncio.wait_for(lonely.start(), 20)


async def test_status_lists_every_node_with_health_fitness_and_rtts(hive: Hive) -> None:
    sentinel = await hive.sentinel()
    nodes = await hive.join([sentinel.listen_url], 2)
    view = await fetch_status(sentinel.listen_url, timeout_s=10)
    assert json.loads(json.dumps(view)) == view
    by_id = {n["id"]: n for n in view["nodes"]}
    assert set(by_id) == {n.node_id.hex() for n in (sentinel, *nodes)}
    assert by_id[sentinel.node_id.hex()]["role"] == "sentinel"
    assert by_id[nodes[0].node_id.hex()]["role"] == "auto"
    for entry in view["nodes"]:
        assert entry["health"]["tflops"] == 1.0
        assert set(entry["fitness"]) == {"attention", "mlp", "verification"}
        assert all(0.0 <= v <= 1.0 for v in entry["fitness"].values())
    # Joiners pinged their links before publishing: their RTT rows name the others.
    row = view["rtt_ms"][nodes[0].node_id.hex()]
    assert sentinel.node_id.hex() in row and all(ms > 0 for ms in row.values())
    assert view["rejected"] == 0


async def test_layer_spans_a_node_serves_are_found_per_layer(hive: Hive) -> None:
    sentinel = await hive.sentinel()
    server = hive.make(seed=20, join=(sentinel.listen_url,),
                       spans=(LayerSpanRecord("smol", 0, 3, 30), LayerSpanRecord("smol", 27, 30, 30)))
    (other,) = await hive.join([sentinel.listen_url], 1, first_seed=21)
    await asyncio.wait_for(server.start(), 20)
    for layer in (0, 2, 29):
        found = await other.dht.get(layer_key("smol", layer))
        assert [owner_of(r) for r in found] == [server.node_id]
        span = decode_value(found[0])
        assert span.start <= layer < span.end
    assert await other.dht.get(layer_key("smol", 3)) == []


async def test_a_killed_node_is_noticed_and_its_records_expire(hive: Hive, tmp_path) -> None:
    sentinel = await hive.sentinel()
    (peer,) = await hive.join([sentinel.listen_url], 1)
    events = sentinel.node.events()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cadencia", "node", "--join", sentinel.listen_url,
        "--data-dir", str(tmp_path / "victim"), "--tflops", "1", "--record-ttl", "4",
        "--ping-interval", "0.3", "--dead-after", "3", "--connect-timeout", "30", "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    try:
        assert proc.stdout is not None
        ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), 60))
        victim = bytes.fromhex(ready["id"])
        await wait_for(lambda: victim in rtc_peers(sentinel) and victim in rtc_peers(peer), 30,
                       "data channels to the victim")
        key = node_key(victim, RecordKind.HEALTH)
        assert await peer.dht.get(key)
        proc.send_signal(signal.SIGKILL)  # no Bye, no SCTP shutdown: it just vanishes
        await proc.wait()

        async def lost() -> PeerLost:
            async for event in events:
                if isinstance(event, PeerLost) and event.node_id == victim:
                    return event
            raise AssertionError("event stream ended")

        event = await asyncio.wait_for(lost(), 30)
        assert event.reason.startswith(("dead", "connection", "closed"))
        await wait_for(lambda: victim not in rtc_peers(peer), 10, "the peer to drop the victim")
        assert victim not in sentinel.dht.routing
        # Its records were stored with a 4 s TTL (--record-ttl) and nobody republishes them.
        for _ in range(150):
            if not await peer.dht.get(key) and not await sentinel.dht.get(key):
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("the dead node's records did not expire")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

"""k-buckets: XOR placement, bounded size, replacement cache, RTT preference, eviction."""

from __future__ import annotations

from hive_core.base.identity import Identity
from hive_core.mesh.dht import RoutingTable, bucket_index, key_of, xor_distance
from hive_core.mesh.dht.distance import random_id_in_bucket
from hive_core.protocol import Contact


def contact(i: int) -> Contact:
    ident = Identity.from_seed(i.to_bytes(32, "big"))
    return Contact(ident.node_id, ident.public_key, f"sim:{i}")


def test_xor_metric_and_bucket_index() -> None:
    a, b = bytes(20), bytes(19) + b"\x01"
    assert xor_distance(a, b) == 1 and bucket_index(a, b) == 0
    assert bucket_index(a, b"\x80" + bytes(19)) == 159
    me = key_of("me")
    for i in (0, 7, 100, 159):
        assert bucket_index(me, random_id_in_bucket(me, i, 0xDEADBEEF)) == i


def test_closest_is_sorted_by_xor_distance() -> None:
    table = RoutingTable(key_of("self"), k=20)
    contacts = [contact(i) for i in range(60)]
    for c in contacts:
        table.add(c, now=0.0)
    target = key_of("target")
    got = table.closest(target, 5)
    known = sorted(table.contacts(), key=lambda c: xor_distance(c.node_id, target))
    assert got == known[:5]


def test_full_bucket_parks_newcomers_and_evicts_failing_members() -> None:
    me = bytes(20)
    table = RoutingTable(me, k=2, max_failures=1)
    # all these land in the top bucket (first bit set) with high probability; pick those that do
    top = [c for c in (contact(i) for i in range(40)) if bucket_index(me, c.node_id) == 159][:4]
    a, b, c, d = top
    assert table.add(a, 0.0) and table.add(b, 0.0)
    assert not table.add(c, 1.0)  # full: c waits in the replacement cache
    assert c.node_id not in table
    assert table.record_failure(a.node_id)  # a stops answering: evicted, c promoted
    assert a.node_id not in table and c.node_id in table
    assert table.add(b, 2.0)  # refreshing a member keeps it
    assert not table.add(d, 3.0)


def test_lower_rtt_newcomer_replaces_the_slowest_member() -> None:
    me = bytes(20)
    table = RoutingTable(me, k=2, pns_factor=2.0)
    top = [c for c in (contact(i) for i in range(40)) if bucket_index(me, c.node_id) == 159][:3]
    slow, ok, fast = top
    table.add(slow, 0.0, rtt_s=0.300)
    table.add(ok, 0.0, rtt_s=0.050)
    assert table.add(fast, 1.0, rtt_s=0.020)
    assert slow.node_id not in table and fast.node_id in table
    assert [e.contact for e in table.nearby(2)] == [fast, ok]


def test_rtt_is_an_ewma() -> None:
    table = RoutingTable(bytes(20))
    c = contact(1)
    table.add(c, 0.0, rtt_s=0.100)
    table.observe_rtt(c.node_id, 0.200, 1.0)
    assert abs((table.rtt(c.node_id) or 0) - 0.130) < 1e-9

"""The live event feed: wire form, what shard servers publish during a real (tiny) ask, that it
never carries the prompt, and that subscribers and queues are bounded (a stuck one loses events)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hive_core.base.stage import Part
from hive_core.events import StageStarted
from hive_core.exec import ClientConfig, generate_hive
from hive_core.exec.feed import EventFeed, FeedConfig
from hive_core.exec.hive import build_hive, identity
from hive_core.mesh.memchannel import memory_pair
from hive_core.mesh.node import Node
from hive_core.protocol import ProtocolError, decode, encode
from hive_core.protocol.feed import EventKind, FeedAnswer, FeedEvent, FeedSubscribe, feed_event

PROMPT = [5, 9, 12, 7, 5, 9, 12, 33, 40, 11, 3]
A, B = b"\x01" * 20, b"\x02" * 20


def test_feed_messages_round_trip_and_refuse_bad_events() -> None:
    hop = feed_event(EventKind.HOP_SENT, A, session_id=b"s" * 16, peer=B, duration_s=0.004,
                     layer_start=0, layer_end=2, part=Part.FULL, step=3)
    assert decode(encode(hop)) == hop
    sub = FeedSubscribe(7, True, 30.0)
    assert decode(encode(sub)) == sub
    with pytest.raises(ProtocolError, match="another node as its source"):
        feed_event(EventKind.HOP_SENT, A, session_id=b"s" * 16, peer=A, duration_s=0.004)
    with pytest.raises(ProtocolError, match="needs a session id"):
        feed_event(EventKind.STAGE_STARTED, A, layer_start=0, layer_end=2)
    with pytest.raises(ProtocolError, match="empty layer range"):
        feed_event(EventKind.STAGE_STARTED, A, session_id=b"s", layer_start=2, layer_end=2)
    with pytest.raises(ProtocolError, match="receipt bytes"):
        feed_event(EventKind.RECEIPT_ISSUED, A, receipt=b"x" * 10)
    with pytest.raises(ProtocolError, match="ttl_s"):
        FeedSubscribe(1, True, float("nan"))
    frame = bytearray(encode(hop))
    frame[-40:] = b"\xff" * 40  # garbage in the tail: refused, never a crash
    with pytest.raises(ProtocolError):
        decode(bytes(frame))


async def _spectator(servers: list[Any]) -> tuple[Node, list[tuple[bytes, FeedEvent]]]:
    """A node linked to every server, subscribed to their feeds."""
    spec = Node(identity("spectator"))
    spec.register_reply(FeedAnswer)
    heard: list[tuple[bytes, FeedEvent]] = []
    spec.on(FeedEvent, lambda peer, msg: heard.append((peer, msg)))
    for s in servers:
        a, b = memory_pair()
        await asyncio.gather(spec.attach(a, kind="memory", expect=s.node.node_id),
                             s.node.attach(b, kind="memory", expect=spec.node_id))
        reply = await spec.request(s.node.node_id, FeedSubscribe(spec.next_rpc_id(), True, 30.0), timeout=5)
        assert isinstance(reply, FeedAnswer) and reply.ok and reply.ttl_s == 30.0
    return spec, heard


async def test_servers_publish_an_ask_of_another_client_without_its_prompt(tiny_gguf, tiny_file) -> None:
    frames: list[bytes] = []
    # Every layer on the servers and no audit: the stages each server reports are its own.
    config = ClientConfig(local_layers=0, local_tail_layers=0, audit_rate=0.0, hedge_floor_s=60)
    hive = await build_hive(tiny_gguf, 2, model=tiny_file, client_config=config)
    spec, heard = await _spectator(hive.servers)
    orig = spec._dispatch  # every message the spectator receives, re-encoded into `frames`

    async def record(link: Any, msg: Any) -> None:
        frames.append(encode(msg))
        await orig(link, msg)

    spec._dispatch = record  # type: ignore[method-assign]
    try:
        s = hive.client.new_session()
        await asyncio.wait_for(generate_hive(s, PROMPT, max_new_tokens=4, context_length=64), 60)
        await s.finish()
        for _ in range(100):
            if sum(m.kind is EventKind.RECEIPT_ISSUED for _, m in heard) >= 2:
                break
            await asyncio.sleep(0.02)
    finally:
        await spec.close()
        await hive.close()
    kinds = {m.kind for _, m in heard}
    assert {EventKind.STAGE_STARTED, EventKind.HOP_SENT, EventKind.RECEIPT_ISSUED} <= kinds
    asker, ids = hive.asker.node_id, [srv.node.node_id for srv in hive.servers]
    for peer, m in heard:
        assert m.node == peer  # each server reports only on itself
        if m.kind is not EventKind.RECEIPT_ISSUED:
            assert m.session_id == s.session_id
    hops = [m for _, m in heard if m.kind is EventKind.HOP_SENT]
    assert {h.peer for h in hops} == {asker} and {h.node for h in hops} == set(ids)
    assert all(h.duration_s > 0 for h in hops)
    stages = {(m.node, m.layer_start, m.layer_end) for _, m in heard if m.kind is EventKind.STAGE_STARTED}
    assert stages == {(ids[0], 0, 2), (ids[1], 2, 4)}
    seqs = [m.seq for p, m in heard if p == ids[0]]
    assert seqs == sorted(seqs) and seqs[0] == 1  # nothing dropped, in order
    # Privacy: no frame the spectator got carries the prompt's token ids (as any integer width).
    for raw in frames:
        for width in (2, 4, 8):
            needle = b"".join(t.to_bytes(width, "little") for t in PROMPT[:4])
            assert needle not in raw


async def test_subscribers_are_bounded_and_a_stuck_one_loses_events_not_time() -> None:
    pub, sub1, sub2 = Node(identity("pub")), Node(identity("s1")), Node(identity("s2"))
    feed = EventFeed(pub, FeedConfig(max_subscribers=1, queue_size=8, send_timeout_s=0.5))
    for s in (sub1, sub2):
        s.register_reply(FeedAnswer)
        a, b = memory_pair()
        await asyncio.gather(s.attach(a, kind="memory", expect=pub.node_id),
                             pub.attach(b, kind="memory", expect=s.node_id))
    try:
        ok = await sub1.request(pub.node_id, FeedSubscribe(sub1.next_rpc_id(), True, 1e3), timeout=5)
        assert ok.ok and ok.ttl_s == 120.0  # capped at max_ttl_s
        refused = await sub2.request(pub.node_id, FeedSubscribe(sub2.next_rpc_id(), True, 30.0), timeout=5)
        assert not refused.ok and "feed full" in refused.error and feed.stats.refused == 1

        stuck = asyncio.Event()
        real_send = pub.send

        async def slow_send(node_id: bytes, msg: Any) -> None:
            if isinstance(msg, FeedEvent):
                await stuck.wait()  # a spectator that never drains its channel
            await real_send(node_id, msg)

        pub.send = slow_send  # type: ignore[method-assign]
        event = StageStarted(b"s", pub.node_id, 0, 1, Part.FULL, 0.0)
        for _ in range(1000):
            feed.publish(event)  # returns at once: nothing here awaits the subscriber
        await asyncio.sleep(0)
        assert feed.stats.published == 1000
        assert feed.stats.dropped >= 1000 - 8 - 1  # the queue holds 8, the sender holds 1
        await asyncio.sleep(0.8)  # the stuck send times out: that subscription ends
        assert sub1.node_id not in feed.subscribers and "send failed" in feed.stats.ended[-1]
        again = await sub2.request(pub.node_id, FeedSubscribe(sub2.next_rpc_id(), True, 30.0), timeout=5)
        assert again.ok  # its place was freed
        bye = await sub2.request(pub.node_id, FeedSubscribe(sub2.next_rpc_id(), False, 0.0), timeout=5)
        assert bye.ok and not feed.subscribers
    finally:
        await feed.close()
        for n in (pub, sub1, sub2):
            await n.close()

"""Receive loops that survive anything: a frame whose handling fails (a bug, or a library
error on hostile input) is logged with its peer and dropped; the next frame on the same
link is served. Node links, DHT lookups and endpoints, and a spectator's feed."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Annotated, Any

import numpy as np
import pytest

from hive_core.base.identity import Identity
from hive_core.mesh.dht import DhtNode
from hive_core.mesh.dht.rpc import RpcEndpoint
from hive_core.mesh.memchannel import memory_pair
from hive_core.mesh.node import Node
from hive_core.protocol import (
    Bye,
    Contact,
    FindValue,
    Nodes,
    Text,
    UInt,
    Value,
    encode,
    message,
)
from hive_core.protocol.feed import EventKind, feed_event

from .conftest import wait_for


class LoopMsgType(IntEnum):
    """A message family for this test, in the experiments range (0xE0-0xFF)."""

    POKE = 0xE4


@message(LoopMsgType.POKE)
@dataclass(frozen=True)
class Poke:
    n: Annotated[int, UInt(4)]
    text: Annotated[str, Text(32)]


async def linked_pair() -> tuple[Node, Node]:
    a, b = Node(Identity.generate()), Node(Identity.generate())
    ca, cb = memory_pair()
    await asyncio.gather(a.attach(ca, kind="memory", expect=b.node_id),
                         b.attach(cb, kind="memory", expect=a.node_id))
    return a, b


async def test_a_failing_handler_costs_its_frame_only(caplog: pytest.LogCaptureFixture) -> None:
    a, b = await linked_pair()
    seen: list[int] = []
    tensors: list[tuple[int, ...]] = []

    def poke(peer: bytes, msg: Poke) -> None:
        if msg.n == 1:
            raise RuntimeError("block parent <5#1> must be deleted or shared ref type")
        seen.append(msg.n)

    def tensor(peer: bytes, t: Any) -> None:
        if not tensors:
            tensors.append(())
            raise TypeError("a tensor handler bug")
        tensors.append(t.shape)

    b.on(Poke, poke)
    b.on_tensor(tensor)
    try:
        for n in (1, 2):
            await a.send(b.node_id, Poke(n, "hi"))
            await a.send_tensor(b.node_id, np.zeros((2, 3), np.float32), stream_id=n)
        await wait_for(lambda: seen == [2] and len(tensors) == 2, 5, "the second frames")
        assert tensors[1] == (2, 3)
        assert b.peers.best(a.node_id) is not None  # the link is still up
        failed = [r.getMessage() for r in caplog.records if "failed on a frame" in r.getMessage()]
        assert len(failed) == 2 and all(a.node_id.hex()[:12] in m for m in failed)
    finally:
        await a.close()
        await b.close()


async def test_a_dht_lookup_goes_on_past_a_transport_bug_and_a_record_that_breaks_its_check(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from hive_core.base.health import HealthRecord
    from hive_core.mesh.dht import RecordKind, make_record, node_key

    owner = Identity.generate()
    health = HealthRecord(tflops=1.0, battery_pct=None, on_ac=True, rtt_median_ms=None,
                          uptime_s=1.0, success_rate=1.0, free_ram_mb=1.0, temperature_c=None,
                          measured_at_ms=0)
    key = node_key(owner.node_id, RecordKind.HEALTH)
    good = make_record(owner, key, health, seq=1, ttl_s=60, now_s=time.time())
    poison = make_record(owner, key, health, seq=2, ttl_s=60, now_s=time.time())
    peers = [Identity.generate() for _ in range(3)]
    contacts = [Contact(p.node_id, p.public_key, "mem") for p in peers]

    async def rpc(contact: Contact, request: Any) -> Any:
        if contact.node_id == peers[0].node_id:
            raise ValueError("a transport bug")
        records = (poison,) if contact.node_id == peers[1].node_id else (good,)
        assert isinstance(request, FindValue)
        return Value(request.rpc_id, records, ())

    me = DhtNode(Identity.generate(), "mem", rpc)
    for c in contacts:
        me.add_contact(c)
    real_check = me.accept_found

    def check(record: Any) -> bool:
        if record.seq == 2:
            raise KeyError("a record check bug")
        return real_check(record)

    me.accept_found = check  # type: ignore[method-assign]
    result = await me.find_value(key, exhaustive=True)
    assert [r.seq for r in result.records] == [1]
    assert result.failed == 1
    assert "lookup request to" in caplog.text and "record from" in caplog.text


async def test_an_endpoint_serves_on_after_a_frame_it_could_not_handle() -> None:
    ours, theirs = memory_pair()
    peer = Identity.generate()
    got: list[str] = []

    def other(msg: Any) -> None:
        if not got:
            got.append("boom")
            raise RuntimeError("handler bug")
        got.append(msg.reason)

    async def handler(contact: Contact, request: Any) -> Any:
        return Nodes(request.rpc_id, ())

    endpoint = RpcEndpoint(ours, Contact(peer.node_id, peer.public_key, "mem"), handler)
    serving = asyncio.ensure_future(endpoint.serve(other))
    await theirs.send(encode(Bye("first")))
    await theirs.send(encode(Bye("second")))
    await wait_for(lambda: got == ["boom", "second"], 5, "the second frame")
    assert endpoint.malformed == 1 and not serving.done()
    await theirs.close()
    await asyncio.wait_for(serving, 5)


async def test_a_spectator_drops_an_event_it_cannot_fold_and_plays_the_next(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from cadencia.game.feed_watch import FeedWatcher

    played: list[Any] = []

    class Source:
        """Just what FeedWatcher touches of a GameSource."""

        class state:  # an attribute bag
            require_evidence = False

        def on_event(self, event: Any, now: float) -> None:
            if not played:
                played.append(None)
                raise TypeError("a folding bug on odd input")
            played.append(event)

    watcher = FeedWatcher(Source(), "ws://127.0.0.1:1", list)  # type: ignore[arg-type]
    node = Identity.generate().node_id
    watcher.subscribed[node] = float("inf")
    caplog.set_level(logging.WARNING)
    for seq in (1, 2):
        event = feed_event(EventKind.STAGE_STARTED, node, session_id=b"s" * 16, layer_end=2)
        watcher._on_event(node, replace(event, seq=seq))
    assert watcher.rejected == 1 and watcher.events == 1 and played[1] is not None
    assert "dropped a STAGE_STARTED event from" in caplog.text

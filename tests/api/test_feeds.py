"""The page's view of other askers' work: the nodes' live feeds, through the API server's own
mesh node. Its own sessions are not shown twice, and a forged slashing is refused."""

from __future__ import annotations

import asyncio
import json
import time

from hive_core.base.stage import Part
from hive_core.exec import generate_hive
from hive_core.protocol.feed import EventKind, feed_event
from tests.api.conftest import http

ASK = json.dumps({"model": "tiny-llama", "max_tokens": 4, "temperature": 0,
                  "messages": [{"role": "user", "content": "the cat"}]}).encode()


async def until(check, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_other_askers_work_reaches_the_page_through_the_feeds(open_server,
                                                                      tiny_gguf) -> None:
    server = await open_server(tiny_gguf)
    try:
        assert (await http(server, "POST", "/v1/chat/completions", ASK))[0] == 200
        feeds = server.feeds
        await until(lambda: feeds.tap is not None and len(feeds.tap.subscribed) == 2)
        tap = feeds.tap
        assert (await http(server, "POST", "/v1/chat/completions", ASK))[0] == 200
        await asyncio.sleep(0.3)
        assert tap.events == 0  # the API's own answers come from its asker, not twice

        queue = server.api.hub.subscribe()
        hive = server.api.engine.connector.hive
        other = hive.client.new_session()  # a session the API did not start: another asker's
        await generate_hive(other, [1, 5, 9], max_new_tokens=3, context_length=64)
        await until(lambda: tap.events >= 4)  # each server: stage started, then a hop per step
        await asyncio.sleep(0.3)  # the live view sends what it got every 0.1 s
        events = []
        while not queue.empty():
            message = queue.get_nowait()
            if message["type"] == "events":
                events += message["events"]
        hops = [e for e in events if e["t"] == "hop"]
        assert {h["to"] for h in hops} <= {n.hex() for n in hive.node_ids}
        assert hops and all(h["from"] == hive.asker.node_id.hex() for h in hops)

        forged = feed_event(EventKind.SLASHED, hive.node_ids[0], session_id=b"s" * 16, step=1,
                            layer_start=1, layer_end=3, part=Part.FULL, reason="lies",
                            chunk=0, chunks=1, evidence=b"not evidence")
        before = tap.events
        tap._on_event(hive.node_ids[0], forged)
        assert tap.refused == 1 and tap.events == before
    finally:
        await server.close()

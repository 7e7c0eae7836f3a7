"""View fixtures: a real city pair (two players' replicas synced by signed edits) and a
factory for offscreen apps (Panda3D's EGL display on Mesa, no X server)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hive_core.base.identity import Identity

pytest.importorskip("panda3d")


def pay_player(city, tokens: int = 400):  # -> WorkReceipt
    """A receipt an asker signed for `city`'s player's work (400 tokens of 15 layers: 5,100 mc),
    recorded in the city's ledger: credits to build and choose with."""
    import time

    from hive_core.base.stage import Part
    from hive_core.economy import WorkReceipt

    r = WorkReceipt.create(Identity.from_seed(b"asker" * 6 + b"xx"), session_id=bytes(16),
                           worker_id=bytes.fromhex(city.player_id), layer_start=0, layer_end=15,
                           part=Part.FULL, tokens=tokens, wall_time_s=1.0,
                           timestamp_ms=time.time_ns() // 1_000_000, stability=1.0,
                           temperature_c=None, battery_pct=None, on_ac=True)
    city.record_receipt(r)
    return r


@pytest.fixture
def cities():
    """Alice's replica with her 8x8 plot at (0, 0), and Bob's with his at (10, 0), in sync;
    each has earned 5,100 mc (a receipt) to build with."""
    from world.model import City

    alice, bob = City(Identity.from_seed(b"a" * 32)), City(Identity.from_seed(b"b" * 32))
    alice.on_local_edit(bob.receive)
    bob.on_local_edit(alice.receive)
    alice.join("alice")
    bob.join("bob")
    alice.add_plot(alice.claim_district(), 0.0, 0.0, 8.0, 8.0)
    bob.add_plot(bob.claim_district(), 10.0, 0.0, 8.0, 8.0)
    pay_player(alice)
    pay_player(bob)
    return alice, bob


@pytest.fixture
def pay():
    """`pay(city, tokens)`: record a receipt paying `city`'s player for that many tokens."""
    return pay_player


@pytest.fixture
def make_app() -> Iterator:
    """Open offscreen WorldApps at 320x240; each is destroyed after the test."""
    from world.view.app import WorldApp
    from world.view.config import ViewConfig

    apps = []

    def make(source, **kw):
        app = WorldApp(ViewConfig(320, 240, offscreen=True), source, **kw)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.destroy()


@pytest.fixture
def live_hive(tiny_gguf):
    """``async with live_hive(source=None, timeout_s=3.0) as (sentinel, servers, player, asker)``:
    a sentinel, two tiny-model shard servers (layers 0-2 and 2-4) and a player on loopback
    (WebSocket + aiortc), and a LiveAsker of the player playing into `source` (default: a
    fresh game source). A short timeout suits discovery: the sentinel never answers shard
    queries, so discovery waits it out."""
    import argparse
    from contextlib import asynccontextmanager
    from dataclasses import replace

    from cadencia.game.live_ask import LiveAsker
    from cadencia.game.session import game_source
    from hive_core.exec.serve import attach_shard_server
    from hive_core.mesh.hivenode import HiveNode
    from hive_core.mesh.node import NodeConfig
    from hive_core.mesh.rtc import RTCOptions
    from hive_core.mesh.runner import parse_span

    fast = NodeConfig(rtc=RTCOptions.loopback(connect_timeout_s=8.0), ping_interval_s=0.5,
                      dead_after_s=4.0)

    @asynccontextmanager
    async def run(source=None, timeout_s: float = 3.0):
        sentinel = HiveNode(Identity.generate(), replace(fast, listen="127.0.0.1:0"))
        await sentinel.start()
        nodes: list[HiveNode] = []
        try:
            for span in ("0-2", "2-4"):
                serve = [f"{tiny_gguf.name}:{span}/4"]
                hn = HiveNode(Identity.generate(), replace(
                    fast, join=(sentinel.listen_url,), listen="127.0.0.1:0",
                    spans=tuple(parse_span(s) for s in serve)))
                attach_shard_server(hn.node, argparse.Namespace(
                    model=str(tiny_gguf), fault=None, serve=serve, tflops=None))
                await hn.start()
                nodes.append(hn)
            player = HiveNode(Identity.generate(), replace(fast, join=(sentinel.listen_url,)))
            await player.start()
            nodes.append(player)
            asker = LiveAsker(player, source if source is not None else game_source(),
                              model=str(tiny_gguf), replicas=1, timeout_s=timeout_s)
            yield sentinel, nodes[:2], player, asker
        finally:
            for hn in reversed(nodes):
                await hn.close()
            await sentinel.close()

    return run

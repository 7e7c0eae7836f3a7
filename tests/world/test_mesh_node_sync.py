"""The city syncs across a live hive as `cadencia node` and `cadencia sentinel` run it: each
opens the City in its data dir and runs MeshSync on its mesh node (real aiortc on loopback)."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from cadencia.commands.node import WorldSync
from hive_core.base.identity import Identity
from hive_core.mesh.hivenode import HiveNode
from hive_core.mesh.node import NodeConfig
from hive_core.mesh.rtc import RTCOptions
from world.model import City
from world.model.mesh import MeshSync
from world.model.store import Store

from .test_provider import wait_for

pytestmark = [pytest.mark.net, pytest.mark.timeout(120)]

FAST = NodeConfig(rtc=RTCOptions.loopback(connect_timeout_s=8.0), roles=("alpha", "beta"),
                  ping_interval_s=0.3, dead_after_s=3.0, handshake_timeout_s=5.0,
                  request_timeout_s=3.0, record_ttl_s=6.0, republish_s=1.5, tflops=1.0)


@pytest.fixture(autouse=True)
def _quiet() -> None:
    for name in ("aioice", "aiortc", "websockets"):
        logging.getLogger(name).setLevel(logging.WARNING)


def kinds(city: City) -> set[str]:
    return {b.kind for b in city.buildings().values()}


async def test_node_and_sentinel_cities_sync_and_persist(tmp_path: Path) -> None:
    d0, d1 = tmp_path / "sentinel", tmp_path / "node"
    # An edit the node made in an earlier run, only in its own store so far.
    before = City.open(d1)
    before.place_building("tower", (1.0, 0.0, 0.0))
    before.close()
    sentinel = HiveNode(Identity.load_or_create(d0), replace(FAST, listen="127.0.0.1:0"))
    worlds = [WorldSync(d0, "sentinel", 0.2), WorldSync(d1, "auto", 0.2)]
    node: HiveNode | None = None
    try:
        # As `serve` runs them: the world attaches before the node starts linking.
        await worlds[0].attach(sentinel)
        await asyncio.wait_for(sentinel.start(), 20)
        node = HiveNode(Identity.load_or_create(d1), replace(FAST, join=(sentinel.listen_url,)))
        await worlds[1].attach(node)
        await asyncio.wait_for(node.start(), 30)
        c0, c1 = worlds[0].city, worlds[1].city
        await wait_for(lambda: "tower" in kinds(c0), 20, "the node's stored edit at the sentinel")
        c0.place_building("park", (5.0, 5.0, 0.0))
        await wait_for(lambda: "park" in kinds(c1), 20, "the sentinel's edit at the node")
        assert c1.districts()[c0.player_id].role == "sentinel"
        assert c0.districts()[c1.player_id].role == "full"  # role auto: a full district
        assert c0.to_json() == c1.to_json()
    finally:
        for w, hive in zip(reversed(worlds), (node, sentinel), strict=True):
            if hive is not None:
                await w.detach(hive)
        await asyncio.wait_for(asyncio.gather(
            *(h.close() for h in (node, sentinel) if h is not None), return_exceptions=True), 20)
    for d in (d0, d1):  # both SQLite stores hold both edits after a restart
        again = City.open(d)
        try:
            assert kinds(again) == {"tower", "park"}
            assert len(again.districts()) == 2
        finally:
            again.close()


def stored_authors(data_dir: Path) -> set[bytes]:
    store = Store.in_dir(data_dir)
    try:
        return {e.author for e in store.load()}
    finally:
        store.close()


async def test_a_sentinel_process_syncs_and_stores_a_joiners_edit(tmp_path: Path) -> None:
    d0 = tmp_path / "sentinel"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cadencia", "sentinel", "--listen", "127.0.0.1:0", "--json",
        "--data-dir", str(d0), "--tflops", "1", "--ping-interval", "0.3",
        "--world-interval", "0.2", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL)
    ident = Identity.generate()
    hive = HiveNode(ident, replace(FAST))
    city = City(ident)
    sync = MeshSync(hive.node, city, interval_s=0.2)
    started = False
    try:
        assert proc.stdout is not None
        ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), 60))
        hive = HiveNode(ident, replace(FAST, join=(ready["listen"],)))
        sync = MeshSync(hive.node, city, interval_s=0.2)
        sync.start()
        started = True
        await asyncio.wait_for(hive.start(), 30)
        sentinel_player = next(iter(City(Identity.load_or_create(d0)).districts()), None)
        assert sentinel_player is None  # a fresh City knows nothing: what follows came by sync
        await wait_for(lambda: any(d.role == "sentinel" for d in city.districts().values()),
                       20, "the sentinel process's district")
        city.place_building("market", (2.0, 3.0, 0.0))
        await wait_for(lambda: ident.public_key in stored_authors(d0), 20,
                       "the edit in the sentinel's SQLite store")
    finally:
        if started:
            await sync.stop()
        await hive.close()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
    assert proc.returncode == 0
    stored = City.open(d0)
    try:
        assert kinds(stored) == {"market"}
    finally:
        stored.close()

"""Credits while hosting: the player's node serves stages under the player's key, the receipts the
asking clients sign for it reach the City ledger, and the balance is the player's to spend on
their choices (raising buildings at once only when asked to: `auto_build`) (embedded `play`,
offscreen; and `cadencia play --hive` serving a live loopback hive)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from hive_core.base.identity import Identity
from hive_core.mesh.hivenode import HiveNode
from hive_core.mesh.node import NodeConfig
from hive_core.mesh.rtc import RTCOptions

ROOT = Path(__file__).resolve().parents[2]
FAST = NodeConfig(rtc=RTCOptions.loopback(connect_timeout_s=8.0), ping_interval_s=0.5, dead_after_s=4.0)


def test_receipts_for_other_workers_or_forged_pay_nothing(cities) -> None:
    from cadencia.game.credits import CreditKeeper
    from hive_core.base.stage import Part
    from hive_core.economy import WorkReceipt

    alice, bob = cities
    client = Identity.from_seed(b"c" * 32)
    me, other = bytes.fromhex(alice.player_id), bytes.fromhex(bob.player_id)

    def receipt(worker: bytes, tokens: int = 5000):
        return WorkReceipt.create(client, session_id=b"s" * 16, worker_id=worker, layer_start=0, layer_end=30,
                                  part=Part.FULL, tokens=tokens, wall_time_s=1.0, timestamp_ms=1,
                                  stability=1.0, temperature_c=None, battery_pct=None, on_ac=True)

    start = alice.balance_mc()  # what the fixture paid her
    keeper = CreditKeeper(alice, cost_mc=100)
    good = receipt(me)
    keeper.on_receipt(receipt(other))
    forged = bytearray(bytes(receipt(me, 9000)))
    forged[-1] ^= 1
    keeper.on_receipt(type(good).parse(bytes(forged)))
    assert keeper.refused == 2 and alice.balance_mc() == start and not keeper.receipts
    keeper.on_receipt(good)
    keeper.on_receipt(good)  # pays once
    assert keeper.receipts == [good] and keeper.earned_mc == good.reward_mc() > 0
    assert keeper.raised == 0 and alice.balance_mc() == start + good.reward_mc()  # hers to spend
    builder = CreditKeeper(bob, cost_mc=100, auto_build=True)
    bobs = receipt(other, 200)
    builder.on_receipt(bobs)
    assert builder.raised >= 1 and bob.balance_mc() < bobs.reward_mc() + 5100  # spent raising


async def test_embedded_play_hosts_under_the_players_key_and_earns(tmp_path, tiny_gguf, make_app) -> None:
    from cadencia.game.credits import CreditKeeper
    from cadencia.game.session import HiveSession, city_view, game_source, open_city
    from hive_core.economy import Ledger

    city = open_city(str(tmp_path))
    me = bytes.fromhex(city.player_id)
    source = game_source(player=city.player_id[:8])
    keeper = CreditKeeper(city, source, cost_mc=1)  # tiny model, tiny rewards: one milli-credit a level
    session = HiveSession(source, model=str(tiny_gguf), identity=city.identity, on_host=keeper.attach)
    app = make_app(source, mode="play", city=city_view(city))
    try:
        ask = asyncio.create_task(session.ask("hi", max_new_tokens=3))
        while not ask.done():
            app.step()
            await asyncio.sleep(0.01)
        result = ask.result()
        for _ in range(200):  # the receipt reaches the player's server just after the answer
            if keeper.receipts:
                break
            app.step()
            await asyncio.sleep(0.01)
        hosted = session.hive._hive().servers[0]
        assert hosted.node.node_id == me == source.me  # the player's own key serves stage 0
        assert keeper.receipts and all(r.worker_id == me for r in keeper.receipts)
        assert {r.receipt_id for r in keeper.receipts} == {r.receipt_id for r in hosted.receipts}
        mine = [r for r in result.receipts if r.worker_id == me]
        assert {r.receipt_id for r in mine} == {r.receipt_id for r in keeper.receipts}  # signed by the asker
        # The ledger is derived from the signed receipts; what was not spent is the balance.
        earned = sum(r.reward_mc() for r in keeper.receipts)
        ledger = Ledger.from_entries([bytes(r) for r in keeper.receipts], [])
        assert earned > 0 and ledger.balance_mc(me) == earned
        assert keeper.raised == 0 and city.balance_mc() == earned  # kept for the player's choices
        app.step()
        assert app.frame.hud.credits_mc == earned  # the game counts the same receipts
    finally:
        await session.close()
        city.close()


@pytest.mark.net
async def test_play_hive_serves_and_records_the_receipts_askers_sign(tiny_gguf, tmp_path) -> None:
    from cadencia.game.live_ask import LiveAsker
    from cadencia.game.session import game_source, open_city

    data = tmp_path / "player"
    sentinel = HiveNode(Identity.generate(), replace(FAST, listen="127.0.0.1:0"))
    await sentinel.start()
    other = HiveNode(Identity.generate(), replace(FAST, join=(sentinel.listen_url,)))
    try:
        env = {**os.environ, "EGL_PLATFORM": "surfaceless"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cadencia", "play", "--hive", sentinel.listen_url, "--model", str(tiny_gguf),
            "--data-dir", str(data), "--offscreen", "--frames", "300", "--size", "320x180", "--tflops", "1",
            "--json", cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        comm = asyncio.create_task(proc.communicate())
        await other.start()
        # A short timeout: the sentinel never answers shard queries, and each ask waits it out.
        asker = LiveAsker(other, game_source(), model=str(tiny_gguf), replicas=1, timeout_s=2.0)
        answered = 0
        while not comm.done():  # another player asks; the playing node is the hive's only server
            try:
                await asyncio.wait_for(asker.ask("hi", max_new_tokens=3), 60)
                answered += 1
            except (ValueError, RuntimeError, ConnectionError):
                await asyncio.sleep(0.5)  # its span records have not spread yet
        out, err = await asyncio.wait_for(comm, 120)
    finally:
        await other.close()
        await sentinel.close()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert answered >= 1, err.decode()[-2000:]
    report = json.loads(out.decode().strip().splitlines()[-1])
    assert report["serving"] == [f"{tiny_gguf.name}:0-4/4"]
    assert report["receipts"] >= 1 and report["earned_mc"] > 0, report
    city = open_city(str(data))
    try:
        me = bytes.fromhex(city.player_id)
        assert report["node"] == city.player_id
        receipts = city.ledger()
        assert receipts.balance_mc(me) == report["balance_mc"] == report["earned_mc"]
        assert report["raised"] == 0
    finally:
        city.close()

"""Receipts from the asker's own measurements: the efficiency factor comes from the Health
record each worker published (a hot or battery-powered node is paid less), wall time is the
asker's, and a receipt for a session a server never ran is refused."""

from __future__ import annotations

import asyncio
import logging
import os

from hive_core.base.stage import Part
from hive_core.economy import WorkReceipt
from hive_core.exec import ClientConfig, generate_hive
from hive_core.exec.hive import build_hive
from hive_core.protocol.inference import ReceiptMsg
from hive_core.sched import health as sensors

PROMPT = [5, 9, 12, 7, 5, 9, 12, 33, 40, 11, 3]
CONFIG = ClientConfig(local_layers=0, local_tail_layers=0, hedge_floor_s=60.0)


def record(monkeypatch, temperature_c: float | None, battery: tuple[float | None, bool]):
    """The Health record a node measures with faked sensors (its temperature and power)."""
    monkeypatch.setattr(sensors, "read_temperature", lambda: temperature_c)
    monkeypatch.setattr(sensors, "read_power", lambda: battery)
    return sensors.measure_health((), uptime_s=7200.0, tflops=1.0).to_health_record()


async def test_a_hot_node_on_battery_is_paid_less_for_the_same_work(
        tiny_gguf, tiny_file, monkeypatch) -> None:
    hot = record(monkeypatch, 88.0, (35.0, False))
    cool = record(monkeypatch, 45.0, (None, True))
    hive = await build_hive(tiny_gguf, 2, replicas=2, model=tiny_file, health={0: hot, 1: cool},
                            client_config=CONFIG)
    try:
        s = hive.client.new_session()
        await asyncio.wait_for(generate_hive(s, PROMPT, max_new_tokens=6, context_length=64), 60)
        receipts = {r.worker_id: r for r in await s.finish()}
        r_hot, r_cool = (receipts[srv.node.node_id] for srv in hive.servers)
        assert r_hot.tokens == r_cool.tokens and r_hot.n_layers == r_cool.n_layers
        assert (r_hot.temperature_dc, r_hot.battery_pct, r_hot.on_ac) == (880, 35, False)
        assert (r_cool.temperature_dc, r_cool.battery_pct, r_cool.on_ac) == (450, None, True)
        assert r_hot.reward_mc() < r_cool.reward_mc() / 2
        # The wall time is what the asker measured, not what the worker said it computed.
        work = s.stages[0].work
        assert abs(r_cool.wall_time_s - work[hive.servers[1].node.node_id][1]) < 1e-5
    finally:
        await hive.close()


async def test_a_receipt_for_a_session_never_run_is_refused(tiny_gguf, tiny_file, caplog) -> None:
    hive = await build_hive(tiny_gguf, 1, model=tiny_file, client_config=CONFIG)
    try:
        srv = hive.servers[0]
        r = WorkReceipt.create(hive.asker.identity, session_id=os.urandom(16),
                               worker_id=srv.node.node_id, layer_start=0, layer_end=4,
                               part=Part.FULL, tokens=10, wall_time_s=0.1, timestamp_ms=1,
                               stability=1.0, temperature_c=None, battery_pct=None, on_ac=True)
        with caplog.at_level(logging.INFO, logger="hive_core.exec.server"):
            await hive.asker.send(srv.node.node_id, ReceiptMsg(bytes(r)))
            await hive.asker.send(srv.node.node_id, ReceiptMsg(b"\x01garbage"))
            await asyncio.sleep(0.1)
        assert srv.receipts == [] and not srv.crashed
        assert "never ran here" in caplog.text and "refused receipt" in caplog.text
    finally:
        await hive.close()

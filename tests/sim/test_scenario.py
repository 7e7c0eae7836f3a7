"""Simulated hives: real DhtNodes over memory channels, silent failures, lookups under churn."""

from __future__ import annotations

import asyncio
import json
import math

import pytest

from cadencia.cli import main as cli_main
from hive_core.base.health import HealthRecord
from hive_core.mesh.dht import DhtConfig, RpcError, node_key
from hive_core.mesh.dht.records import RecordKind
from hive_core.sim import (
    SimConfig,
    SimError,
    SimNetwork,
    constant_latency,
    run_virtual,
    simulate,
)
from hive_core.sim.scenario import percentile

CFG = DhtConfig(k=8, alpha=3, rpc_timeout_s=1.0)


def health() -> HealthRecord:
    return HealthRecord(tflops=1.0, battery_pct=None, on_ac=True, rtt_median_ms=None,
                        uptime_s=1.0, success_rate=1.0, free_ram_mb=512.0,
                        temperature_c=None, measured_at_ms=0)


def test_protocol_joins_publish_and_silent_failure() -> None:
    async def main() -> dict[str, object]:
        net = SimNetwork(constant_latency(30, 40.0), CFG, seed=1)
        nodes = [net.spawn(i) for i in range(30)]
        await net.join(nodes[0], None)
        for i, n in enumerate(nodes[1:], start=1):
            await net.join(n, nodes[(i * 7) % i])
        tables = [len(n.dht.routing) for n in nodes]
        owner = nodes[5]
        await owner.dht.publish(health())
        key = node_key(owner.node_id, RecordKind.HEALTH)
        t0 = net.now()
        found = await nodes[17].dht.find_value(key)
        took = net.now() - t0
        # a silent node: requests to it time out after rpc_timeout_s and it is evicted
        victim, asker = nodes[9], nodes[3]
        asker.dht.add_contact(victim.dht.contact)
        await asker.dht.ping(victim.dht.contact)  # link up while alive
        net.fail(victim)
        t1 = net.now()
        with pytest.raises(RpcError):
            await asker.dht.ping(victim.dht.contact)
        waited = net.now() - t1
        evicted = victim.node_id not in asker.dht.routing
        await net.shutdown()
        return {"tables": tables, "found": found, "took": took, "waited": waited,
                "evicted": evicted, "links": net.links_opened}

    r = run_virtual(main())
    assert min(r["tables"]) >= CFG.k  # type: ignore[type-var]
    found = r["found"]
    assert found.records and found.records[0].kind == RecordKind.HEALTH  # type: ignore[attr-defined]
    if found.queried:  # type: ignore[attr-defined]
        assert r["took"] >= 0.040 - 1e-9  # at least one 40 ms round trip
    assert r["waited"] == pytest.approx(CFG.rpc_timeout_s)
    assert r["evicted"]


def test_scenario_under_churn_meets_the_targets() -> None:
    cfg = SimConfig(nodes=80, churn=0.1, lookups=80, records=30, k=8, seed=2,
                    latency="constant:30", join="protocol", lookup_window_s=60.0)
    seen: list[tuple[str, int, int]] = []
    r = simulate(cfg, lambda phase, done, total: seen.append((phase, done, total)))
    assert r.failed_nodes == 8 and r.new_nodes == 8 and r.join_failures == 0
    assert r.completed + (r.lookups - r.completed) == 80 and r.completed >= 70
    assert r.success_rate >= 0.99
    assert r.hops_median <= math.log2(80) / 2 + 2
    network = r.found - r.local_hits
    assert network > 0
    # every network lookup costs at least one 30 ms round trip of simulated time
    assert r.latency_ms_median >= 30.0 - 1e-6
    assert r.rpcs_per_lookup >= 1.0 * network / max(r.completed, 1)
    assert ("join", 79, 79) in seen and ("lookup", 80, 80) in seen
    assert json.dumps(r.as_dict())  # JSON-ready


def test_converged_tables_and_heavy_loss() -> None:
    cfg = SimConfig(nodes=120, churn=0.1, lookups=60, records=20, k=8, seed=3,
                    latency="constant:20", loss=0.2, lookup_window_s=30.0)
    r = simulate(cfg)
    assert r.mean_table_size >= 8
    # 20 % loss each way: requests time out, lookups route around them
    assert r.failed_rpcs_per_lookup > 0
    assert r.latency_ms_p99 >= 1000 * cfg.rpc_timeout_s
    assert r.success_rate >= 0.9


def test_bad_parameters_are_one_line_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for kwargs in ({"nodes": 1}, {"churn": 1.0}, {"lookups": 0}, {"join": "magic"}):
        with pytest.raises(SimError):
            SimConfig(**kwargs)  # type: ignore[arg-type]
    assert cli_main(["sim", "--nodes", "5", "--latency", "moon"]) == 2
    assert "unknown latency model 'moon'" in capsys.readouterr().err


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["sim", "--nodes", "40", "--lookups", "20", "--records", "10",
                     "--k", "8", "--latency", "constant:10", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["nodes"] == 40 and out["lookups"] == 20 and 0 <= out["success_rate"] <= 1
    assert out["latency_source"] == "constant 10 ms"


def test_percentile() -> None:
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.0
    assert percentile([1.0] * 99 + [100.0], 99) == 1.0
    assert percentile([1.0] * 98 + [100.0] * 2, 99) == 100.0
    assert math.isnan(percentile([], 50))


def test_failing_every_seed_is_a_join_failure() -> None:
    async def main() -> None:
        net = SimNetwork(constant_latency(3, 10.0), CFG)
        a, b = net.spawn(0), net.spawn(1)
        await net.join(a, None)
        net.fail(a)
        with pytest.raises(RpcError, match="no bootstrap contact answered"):
            await net.join(b, a)
        await net.shutdown()

    run_virtual(main())
    asyncio.get_event_loop_policy()  # the virtual loop did not leak into the policy


def test_a_run_depends_on_its_seed_only() -> None:
    cfg = SimConfig(nodes=50, lookups=30, records=10, k=8, latency="constant:30",
                    lookup_window_s=20.0)
    a, b = simulate(cfg).as_dict(), simulate(cfg).as_dict()
    a.pop("wall_s")
    b.pop("wall_s")
    assert a == b

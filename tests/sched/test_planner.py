"""Planner: deterministic, optimal under its cost model, never slowed down by a weak node."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import pytest

from hive_core.base.health import HealthVector
from hive_core.base.stage import Part
from hive_core.model.config import LlamaConfig
from hive_core.sched.planner import Candidate, CostModel, PlanError, plan

CFG = LlamaConfig(n_layers=30, hidden=576, ffn=1536, n_heads=9, n_kv_heads=3, vocab_size=49152,
                  context_length=8192, rope_base=100000.0, rms_eps=1e-5)
COST = CostModel.for_model(CFG)


def node(i: int, tflops: float = 1.0, ram_mb: float = 8000.0, rtt: float = 2.0,
         roles: frozenset[str] = frozenset(), success: float = 1.0) -> Candidate:
    h = HealthVector(tflops=tflops, battery_pct=None, on_ac=True, peers=(), uptime_s=100.0,
                     success_rate=success, free_ram_mb=ram_mb, temperature_c=None, measured_at_ms=0)
    return Candidate(bytes([i]) * 20, h, rtt, roles)


def covers(p) -> None:
    done = []
    for s in p.stages:
        for layer in s.stage.layers:
            if s.stage.part.has_attention:
                done.append((layer, "a"))
            if s.stage.part.has_mlp:
                done.append((layer, "m"))
    assert done == [(layer, k) for layer in range(30) for k in "am"]


def brute_force(cands: list[Candidate]) -> float:
    """Best cost over every subset/order and split points (small cases only)."""
    best = float("inf")
    for k in range(1, len(cands) + 1):
        for subset in itertools.permutations(cands, k):
            for cuts in itertools.combinations(range(1, 30), k - 1):
                bounds = (0, *cuts, 30)
                ok, total = True, 0.0
                for c, lo, hi in zip(subset, bounds, bounds[1:], strict=False):
                    if hi - lo > COST.max_layers(c):
                        ok = False
                        break
                    total += COST.hop_s(c) + (hi - lo) * COST.layer_s(c)
                if ok:
                    best = min(best, total)
    return best


def test_plan_is_deterministic_contiguous_and_json() -> None:
    cands = [node(i, tflops=0.5 + i / 10, ram_mb=600) for i in range(1, 6)]
    p1 = plan(cands, 30, COST)
    p2 = plan(list(reversed(cands)), 30, COST)
    assert p1 == p2
    covers(p1)
    doc = json.loads(p1.to_json())
    assert doc["stages"][0]["layers"][0] == 0 and doc["stages"][-1]["layers"][1] == 30


def test_matches_brute_force_under_memory_limits() -> None:
    cands = [node(1, 2.0, 600, 1.0), node(2, 1.0, 800, 5.0), node(3, 0.3, 1600, 1.0)]
    p = plan(cands, 30, COST, split=False)
    assert p.est_token_s == pytest.approx(brute_force(cands))


def test_a_slow_node_never_makes_the_hive_slower() -> None:
    base = [node(1, 2.0, 800), node(2, 2.0, 800)]
    for slow in (node(9, 0.01, 8000), node(9, 0.5, 600, rtt=400.0), node(9, 2.0, 600, rtt=40)):
        without = plan(base, 30, COST)
        with_slow = plan([*base, slow], 30, COST)
        assert with_slow.est_token_s <= without.est_token_s + 1e-12
    very_slow = plan([*base, node(9, 0.01, 8000)], 30, COST)
    assert bytes([9]) * 20 in very_slow.left_out


def test_memory_forces_more_stages_and_too_little_is_an_error() -> None:
    p = plan([node(1, ram_mb=600), node(2, ram_mb=600), node(3, ram_mb=600)], 30, COST)
    assert len(p.stages) == 3
    with pytest.raises(PlanError):
        plan([node(1, ram_mb=10)], 30, COST)
    with pytest.raises(PlanError):
        plan([node(1, success=0.1)], 30, COST)


def test_excluded_nodes_are_left_out() -> None:
    cands = [node(1, 5.0), node(2, 1.0)]
    assert plan(cands, 30, COST).nodes == [bytes([1]) * 20]
    assert plan(cands, 30, COST, excluded=frozenset({bytes([1]) * 20})).nodes == [bytes([2]) * 20]


def test_split_only_where_it_pays() -> None:
    # Far-away alpha/beta pair: the extra hops cost more than they save.
    far = [node(1, 0.2, 8000, 1.0), node(2, 0.2, 8000, 30.0, frozenset({"alpha"})),
           node(3, 0.2, 8000, 30.0, frozenset({"beta"}))]
    assert all(s.stage.part is Part.FULL for s in plan(far, 30, COST).stages)
    # A beta with big compute next door, an alpha that alone could not hold a full layer.
    near = [node(2, 0.02, 8000, 0.01, frozenset({"alpha"})),
            node(3, 50.0, 700, 0.01, frozenset({"beta"}))]
    p = plan(near, 30, replace(COST, hop_overhead_s=0.0))
    parts = {s.stage.part for s in p.stages}
    assert Part.ATTENTION in parts and Part.MLP in parts
    covers(p)


def test_replicas_use_distinct_nodes() -> None:
    cands = [node(i, 1.0 + i) for i in range(1, 5)]
    p = plan(cands, 30, COST, replicas=3)
    for s in p.stages:
        assert len(s.nodes) == 3 and len(set(s.nodes)) == 3
    with pytest.raises(PlanError):
        plan(cands, 30, COST, replicas=0)

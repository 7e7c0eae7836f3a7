"""The planner reads the Health Vector (battery, AC, stability, heat, measured RTTs) and leaves
out a node that would slow the pipeline; the servers' own spans give way only to a clear gain."""

from __future__ import annotations

import itertools

import pytest

from hive_core.base.health import HealthRecord, HealthVector
from hive_core.base.stage import Part, Stage
from hive_core.model.config import LlamaConfig
from hive_core.sched.planner import Candidate, CostModel, fixed_plan, plan
from hive_core.sched.routing import (
    candidate,
    chain_ms,
    estimate,
    level_compute,
    order_for_cascade,
    prefer_planned,
)

CFG = LlamaConfig(n_layers=30, hidden=576, ffn=1536, n_heads=9, n_kv_heads=3, vocab_size=49152,
                  context_length=8192, rope_base=100000.0, rms_eps=1e-5)
COST = CostModel.for_model(CFG)
A, B, C = bytes([1]) * 20, bytes([2]) * 20, bytes([3]) * 20


def record(*, tflops: float = 1.0, battery: float | None = None, on_ac: bool = True,
           success: float = 1.0, temp: float | None = None, ram: float = 8000.0) -> HealthRecord:
    return HealthRecord(tflops=tflops, battery_pct=battery, on_ac=on_ac, rtt_median_ms=5.0,
                        uptime_s=3600.0, success_rate=success, free_ram_mb=ram,
                        temperature_c=temp, measured_at_ms=0)


def cand(node_id: bytes, rtt: float = 2.0, **health: float | bool | None) -> Candidate:
    return candidate(node_id, tflops=1.0, free_ram_mb=8000.0, on_ac=True,
                     health=record(**health), rtt_ms=rtt)  # type: ignore[arg-type]


def ram_for(layers: int) -> float:
    """Free RAM (MiB) in which a node holds `layers` full layers and no more."""
    return layers * (COST.layer_bytes + COST.kv_bytes_per_layer) / COST.ram_share / 2**20 + 1


def tok_s_alone(c: Candidate) -> float:
    return 1.0 / plan([c], 30, COST).est_token_s


def test_the_published_record_is_what_the_planner_reads() -> None:
    c = candidate(A, tflops=9.0, free_ram_mb=100.0, on_ac=True,
                  health=record(tflops=0.5, battery=40.0, on_ac=False, success=0.9, temp=70.0),
                  rtt_ms=12.0, roles=("alpha", "sentinel"))
    h = c.health
    assert (h.tflops, h.battery_pct, h.on_ac, h.success_rate, h.temperature_c) == (
        0.5, 40.0, False, 0.9, 70.0)
    assert c.rtt_ms == 12.0 and c.roles == frozenset({"alpha"})
    # No record: the shard query's answer, its claim capped; on battery with no charge: half.
    bare = candidate(B, tflops=1e4, free_ram_mb=900.0, on_ac=False, max_tflops=64.0)
    assert (bare.health.tflops, bare.health.free_ram_mb, bare.health.battery_pct) == (
        64.0, 900.0, 50.0)


def test_a_node_on_battery_counts_slower_and_an_almost_empty_one_is_left_out() -> None:
    ac, full, low, empty = (cand(A), cand(B, battery=90.0, on_ac=False),
                            cand(B, battery=30.0, on_ac=False), cand(B, battery=10.0, on_ac=False))
    assert COST.layer_s(ac) < COST.layer_s(full) < COST.layer_s(low)
    assert COST.hop_s(ac) < COST.hop_s(low)
    # Same speed and RTT: the plan keeps the node on AC, not the one on battery.
    assert plan([ac, low], 30, COST).nodes == [A]
    assert B in plan([cand(A, tflops=0.05), empty], 30, COST, excluded=frozenset()).left_out
    assert not COST.usable(empty) and COST.usable(low)
    # Plugged in, its charge does not matter.
    assert COST.layer_s(cand(B, battery=10.0, on_ac=True)) == COST.layer_s(ac)


def test_flaky_and_hot_nodes_count_slower() -> None:
    steady, flaky, hot = cand(A), cand(B, success=0.6), cand(C, temp=90.0)
    assert COST.layer_s(flaky) == pytest.approx(COST.layer_s(steady) / 0.6)
    assert COST.layer_s(steady) < COST.layer_s(hot) < 2 * COST.layer_s(steady) + 1e-12
    assert plan([steady, flaky, hot], 30, COST).nodes == [A]


def test_a_slow_device_is_left_out_of_a_fast_one_exo_489() -> None:
    """exo #489: a 40 and a 20 tok/s device together gave 24. The planner keeps the fast one
    alone when it holds the model, and when it cannot, gives the slow one only what it must."""
    fast, slow = cand(A, tflops=0.02), cand(B, tflops=0.01)
    alone = tok_s_alone(fast)
    assert tok_s_alone(slow) == pytest.approx(alone / 2, rel=0.05)  # 2:1, as 40 and 20
    both = plan([fast, slow], 30, COST)
    assert both.nodes == [A] and B in both.left_out
    assert 1.0 / both.est_token_s == pytest.approx(alone)
    # The fast one holds only 20 layers: the slow one takes the other 10, no more.
    small = cand(A, tflops=0.02, ram=ram_for(20))
    forced = plan([small, slow], 30, COST)
    layers = {ps.nodes[0]: len(ps.stage.layers) for ps in forced.stages}
    assert layers == {A: 20, B: 10}
    split_evenly = 15 * (COST.layer_s(small) + COST.layer_s(slow)) + 2 * COST.hop_s(slow)
    assert forced.est_token_s < split_evenly


def test_far_nodes_are_priced_by_measured_rtt() -> None:
    near, far = cand(A, rtt=8.0, ram=ram_for(12)), cand(B, rtt=290.0)
    assert COST.hop_s(far) - COST.hop_s(near) == pytest.approx(0.282)
    # Neither near node holds the model: together they do, and the far one stays out.
    p = plan([near, far, cand(C, rtt=45.0, ram=ram_for(20))], 30, COST)
    assert B in p.left_out and set(p.nodes) == {A, C}


def test_spans_give_way_only_to_a_clear_gain() -> None:
    es, de, nz = cand(A, rtt=8.5), cand(B, rtt=45.6), cand(C, rtt=292.8)
    cands = {c.node_id: c for c in (es, de, nz)}
    spans = fixed_plan([Stage(1, 10), Stage(10, 20), Stage(20, 29)], [[A], [B], [C]])
    planned = plan(list(cands.values()), 28, COST)
    assert C in planned.left_out
    assert estimate(spans, cands, COST) > 0.29
    assert prefer_planned(spans, planned, cands, COST)
    # A late ping (a busy server on loopback measured 75 ms) is not "far": spans stay.
    busy = {A: cand(A, rtt=75.0), B: cand(B, rtt=15.0)}
    busy_plan = plan(list(busy.values()), 28, COST)
    assert busy_plan.nodes == [B]
    assert not prefer_planned(fixed_plan([Stage(1, 15), Stage(15, 29)], [[A], [B]]), busy_plan,
                              busy, COST, gain=1.0, min_saving_s=0.0)
    # Equal nodes on loopback: a planned route saves a hop or two, not enough to move layers.
    local = {n: cand(n, rtt=1.0) for n in (A, B)}
    two = fixed_plan([Stage(1, 15), Stage(15, 29)], [[A], [B]])
    assert not prefer_planned(two, plan(list(local.values()), 28, COST), local, COST)
    # A stage on a node the cost model cannot use is never kept; one it cannot price is.
    assert estimate(two, {A: local[A]}, COST) == float("inf")
    assert not prefer_planned(two, plan([local[A]], 28, COST), {A: local[A]}, COST)
    # A server the asker could not ping in time is not judged far on a guess.
    unmeasured = {A: cand(A, rtt=None), B: local[B]}  # type: ignore[arg-type]
    assert COST.hop_s(unmeasured[A]) > COST.hop_s(local[B])  # priced at its record's median
    assert not prefer_planned(two, plan([local[B]], 28, COST), unmeasured, COST,
                              gain=1.0, min_saving_s=0.0)
    draining = {**local, B: cand(B, rtt=1.0, battery=5.0, on_ac=False)}
    assert prefer_planned(two, plan(list(draining.values()), 28, COST), draining, COST,
                          min_saving_s=0.0)
    with pytest.raises(ValueError, match="gain"):
        prefer_planned(two, two, local, COST, gain=0.5)


def test_a_vector_from_the_record_keeps_its_median_rtt() -> None:
    c = cand(A, rtt=None)  # type: ignore[arg-type]
    assert isinstance(c.health, HealthVector) and c.health.rtt_median_ms == 5.0
    assert COST.hop_s(c) == pytest.approx(0.005 + COST.hop_overhead_s
                                          + 2 * COST.hidden_bytes * 8 / COST.bandwidth_bps)


def test_preloaded_spans_never_move_for_a_tflops_claim() -> None:
    """A node's TFLOPS is its own quarter-second benchmark (ten times apart on a loaded
    machine, or a liar's bait for layers): spans are weighed at one figure for all."""
    raw = {A: cand(A, rtt=1.0, tflops=0.005), B: cand(B, rtt=1.0, tflops=5.0)}
    two = fixed_plan([Stage(1, 15), Stage(15, 29)], [[A], [B]])
    by_claims = plan(list(raw.values()), 28, COST)
    assert by_claims.nodes == [B] and estimate(by_claims, raw, COST) * 2 < estimate(two, raw, COST)
    assert not prefer_planned(two, by_claims, raw, COST)  # A is near and usable: it stays
    level = {c.node_id: c for c in level_compute(list(raw.values()))}
    assert [c.health.tflops for c in level.values()] == pytest.approx([2.505, 2.505])  # 0.01 at least
    assert level[A].rtt_ms == 1.0 and level[A].health.success_rate == 1.0
    assert not prefer_planned(two, plan(list(level.values()), 28, COST), level, COST)
    # What the asker measured itself still counts: a far node's span gives way.
    far = {A: cand(A, rtt=1.0), B: cand(B, rtt=290.0, tflops=50.0)}
    level = {c.node_id: c for c in level_compute(list(far.values()))}
    assert prefer_planned(two, plan(list(level.values()), 28, COST), level, COST)
    assert level_compute([]) == []


def test_a_cascade_takes_its_stages_in_the_order_that_crosses_the_least_latency() -> None:
    """Asker at 0 ms, nodes on a line at 10, 20 and 30 ms from it (RTT = distance): the chain
    0 -> 10 -> 20 -> 30 -> 0 crosses 30 ms one way; 20 -> 10 -> 30 would cross 40."""
    asker = {A: 10.0, B: 20.0, C: 30.0}
    links = {(A, B): 10.0, (B, C): 10.0, (C, A): 20.0}  # either end's record will do
    assert chain_ms([A, B, C], asker, links) == pytest.approx(30.0)
    assert chain_ms([B, A, C], asker, links) == pytest.approx(40.0)
    assert chain_ms([A, C], asker, {}, unknown_ms=50.0) == pytest.approx(45.0)
    p = fixed_plan([Stage(1, 9), Stage(9, 20), Stage(20, 29)], [[B, C], [A], [C]])
    best = order_for_cascade(p, asker, links)
    order = [ps.nodes[0] for ps in best.stages]
    assert chain_ms(order, asker, links) == pytest.approx(30.0)  # the least there is
    assert order in ([A, B, C], [C, B, A], [B, C, A], [A, C, B])  # its reverses tie
    assert order == [A, B, C]  # a tie goes by id: the same inputs, the same route
    assert [ps.nodes for ps in best.stages] == [(A,), (B, C), (C,)]  # replicas ride along
    # Each node keeps its number of layers; the ranges stay contiguous from the same start.
    assert [(ps.stage.start, ps.stage.end) for ps in best.stages] == [(1, 12), (12, 20), (20, 29)]
    assert order_for_cascade(best, asker, links) == best  # already the best: unchanged
    split = fixed_plan([Stage(1, 2, Part.ATTENTION), Stage(1, 2, Part.MLP)], [[B], [A]])
    assert order_for_cascade(split, asker, links) is split


def test_an_asker_routes_a_cascade_along_the_map() -> None:
    """Three servers that each hold 10 of SmolLM2's 30 layers; of the three ways around, one
    crosses 50 ms one way and the others 175: the route takes it (either direction), whatever
    order the session's draw gave the planner."""
    from hive_core.exec.remote import route
    from hive_core.protocol.inference import ShardInfo

    ram = ram_for(10)
    infos = {n: ShardInfo(1, "m.gguf", 30, 576, 0, 0, 1.0, ram, True) for n in (A, B, C)}
    asker = {A: 10.0, B: 100.0, C: 30.0}
    links = {(A, B): 20.0, (B, C): 40.0, (A, C): 200.0}
    assert sorted(chain_ms(o, asker, links) for o in itertools.permutations([A, B, C])) == [
        50.0, 50.0, 175.0, 175.0, 175.0, 175.0]
    for salt in (b"1", b"2", b"3", b"4", b"5", b"6"):
        p = route(infos, CFG, "m.gguf", 1, asker, salt=salt, links=links)
        order = [ps.nodes[0] for ps in p.stages]
        assert order in ([A, B, C], [C, B, A])
        assert [ps.stage.start for ps in p.stages] == [0, 10, 20]
    star = [ps.nodes[0] for ps in route(infos, CFG, "m.gguf", 1, asker, salt=b"x").stages]
    assert sorted(star) == [A, B, C]  # a star's order is the draw's: its hops cost the same

"""From what servers publish to the planner's inputs, and the servers' own spans weighed against a plan.

A server's candidate is built from its signed Health record in the DHT where there is one
(battery, AC power, uptime, success rate, temperature, as it measured them) and from what it
answered the shard query otherwise; the RTT is the asker's own measurement of its link.
Roles (alpha for attention and its cache, beta for the MLP) come from its roles record.

Servers preload spans; when the spans cover the model, the asker takes them as they are
unless the planner finds a route at least `gain` times faster and `min_saving_s` a token
faster that leaves out a far node (over 80 ms by the asker's own pings, the least of three),
one on a draining battery or one that drops requests, weighing the servers at one TFLOPS
figure (`level_compute`): preloaded layers never move for a TFLOPS claim, nor for a ping
that a busy server answered late. Without spans (servers that load on demand) the planner reads the claims too
and leaves a slow node out of a pipeline of fast ones (exo #489: a 40 and a 20 tok/s
device gave 24 together). A planned route makes servers load layers on first use.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace

from hive_core.base.health import HealthRecord, HealthVector
from hive_core.base.stage import Part
from hive_core.sched.planner import Candidate, CostModel, Plan

ROLE_NAMES = frozenset({"alpha", "beta"})


def candidate(node_id: bytes, *, tflops: float, free_ram_mb: float, on_ac: bool,
              health: HealthRecord | None = None, rtt_ms: float | None = None,
              roles: Collection[str] = (), max_tflops: float = 64.0) -> Candidate:
    """A planner candidate: its published Health record where it has one, else the shard
    query's answer (`tflops`, `free_ram_mb`, `on_ac`). TFLOPS count up to `max_tflops`
    whichever says it: both are the node's own claims."""
    if health is not None:
        vector, claimed = HealthVector.from_health_record(health), health.tflops
    else:
        # Says it runs on battery but published no charge: count it half empty.
        vector = HealthVector(tflops=0.0, battery_pct=None if on_ac else 50.0, on_ac=on_ac,
                              peers=(), uptime_s=0.0, success_rate=1.0, free_ram_mb=free_ram_mb,
                              temperature_c=None, measured_at_ms=0)
        claimed = tflops
    vector = replace(vector, tflops=min(max(claimed, 0.01), max_tflops),
                     free_ram_mb=vector.free_ram_mb or free_ram_mb)
    return Candidate(node_id, vector, rtt_ms, frozenset(r for r in roles if r in ROLE_NAMES))


def level_compute(cands: Sequence[Candidate]) -> list[Candidate]:
    """`cands` with every TFLOPS figure set to their median: how spans are weighed against a
    plan. A figure is a node's own claim from a quarter-second benchmark, ten times apart on a
    loaded machine, and a liar's bait for layers; RTTs the asker measured itself, and power
    and stability, stay as they are."""
    if not cands:
        return []
    median = statistics.median(c.health.tflops for c in cands)
    return [replace(c, health=replace(c.health, tflops=median)) for c in cands]


def estimate(p: Plan, candidates: Mapping[bytes, Candidate], cost: CostModel) -> float:
    """Seconds a token `p` takes by `cost` (star: a hop to each stage's primary plus its
    layers); a stage on a node not among `candidates`, or one the cost model leaves out
    (draining its battery, dropping requests), counts as infinitely slow."""
    total = 0.0
    for ps in p.stages:
        c = candidates.get(ps.nodes[0])
        if c is None or not cost.usable(c):
            return float("inf")
        share = {Part.FULL: 1.0, Part.ATTENTION: cost.attn_share,
                 Part.MLP: 1.0 - cost.attn_share}[ps.stage.part]
        total += cost.hop_s(c) + len(ps.stage.layers) * cost.layer_s(c, share)
    return total


def prefer_planned(spans: Plan, planned: Plan, candidates: Mapping[bytes, Candidate],
                   cost: CostModel, *, gain: float = 2.0, min_saving_s: float = 0.05,
                   far_ms: float = 80.0) -> bool:
    """Whether `planned` beats the servers' own `spans` by `gain` times and `min_saving_s`,
    leaving out a span's server that is far (the asker measured more than `far_ms` to it:
    mesh-llm keeps such peers out of splits) or that the cost model cannot use (a draining
    battery, dropped requests). Spans are kept where they cannot be judged: a server outside
    `candidates` (another weights mode), or one whose RTT the asker did not measure itself."""
    if gain < 1.0 or min_saving_s < 0.0:
        raise ValueError(f"gain must be >= 1 and the saving >= 0, got {gain} and {min_saving_s}")
    primaries = [ps.nodes[0] for ps in (*spans.stages, *planned.stages)]
    if any(n not in candidates or candidates[n].rtt_ms is None for n in primaries):
        return False
    kept = set(planned.nodes)
    dropped = [candidates[ps.nodes[0]] for ps in spans.stages if ps.nodes[0] not in kept]
    if not any((c.rtt_ms or 0.0) > far_ms or not cost.usable(c) for c in dropped):
        return False
    old, new = estimate(spans, candidates, cost), estimate(planned, candidates, cost)
    return new * gain <= old and old - new >= min_saving_s


def chain_ms(order: Sequence[bytes], asker_rtt: Mapping[bytes, float],
             links: Mapping[tuple[bytes, bytes], float], unknown_ms: float = 50.0) -> float:
    """One-way milliseconds a cascade token crosses: asker -> order[0] -> ... -> asker. A
    pair's RTT is what either end published (the map), else `unknown_ms`."""
    def rtt(a: bytes, b: bytes) -> float:
        return links.get((a, b), links.get((b, a), unknown_ms))

    if not order:
        return 0.0
    hops = [asker_rtt.get(order[0], unknown_ms), asker_rtt.get(order[-1], unknown_ms)]
    hops += [rtt(a, b) for a, b in itertools.pairwise(order)]
    return sum(hops) / 2


def order_for_cascade(p: Plan, asker_rtt: Mapping[bytes, float],
                      links: Mapping[tuple[bytes, bytes], float], *, unknown_ms: float = 50.0,
                      max_stages: int = 7) -> Plan:
    """`p` with its stages' nodes taken in the order that crosses the least latency as a
    cascade, each node keeping its number of layers (the compute is the same in any order, a
    star's hops too). Plans with split stages, or more than `max_stages`, stay as they are."""
    stages = p.stages
    if len(stages) < 2 or len(stages) > max_stages or any(
            ps.stage.part is not Part.FULL for ps in stages):
        return p
    first = [ps.nodes[0] for ps in stages]
    # Ties (a chain and its reverse cross the same RTTs) keep the plan's own order, else
    # go by the ids given (an asker passes the session's drawn labels, never real ids).
    best = min(itertools.permutations(stages), key=lambda perm: (
        round(chain_ms([ps.nodes[0] for ps in perm], asker_rtt, links, unknown_ms), 9),
        [ps.nodes[0] for ps in perm] != first, [ps.nodes[0] for ps in perm]))
    at, placed = stages[0].stage.start, []
    for ps in best:
        n = len(ps.stage.layers)
        placed.append(replace(ps, stage=replace(ps.stage, start=at, end=at + n)))
        at += n
    return replace(p, stages=tuple(placed))

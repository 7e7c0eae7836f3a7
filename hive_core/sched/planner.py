"""The planner: a pure, deterministic function from Health Vectors and RTTs to a route.

The asker talks to every stage itself (a star: hidden states go out and come back each
hop), so a plan's per-token latency is the sum, over the stages it uses, of the hop to
that node plus the compute of its layers. That cost does not depend on the stages'
order, so a dynamic programme over nodes in a fixed order finds the exact optimum over
every assignment of contiguous layer ranges to distinct nodes. Leaving a node out is
always one of the options it weighs, so adding a slow node can never make the chosen
plan slower than the best plan without it.

The Health Vector weighs in beyond TFLOPS and RAM: a node's time counts divided by its
success rate (a request it drops is a retry elsewhere), a node on battery counts slower the
emptier it is (it is used only where it clearly pays) and is left out below a floor, and a
hot node counts slower (it throttles). Measured RTTs from the asker, not guesses, price hops.

Attention-to-alpha / MLP-to-beta splits are one more kind of unit (an alpha node and a
beta node sharing a layer range, two hops per layer): the cost model keeps one only
where its faster parts outweigh those hops, or where memory leaves no other choice.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from hive_core.base.health import HealthVector
from hive_core.base.stage import Part, Stage
from hive_core.model.config import LlamaConfig

MB = 1024 * 1024


class PlanError(ValueError):
    """No route covers the model with the nodes given (too few, too small, all excluded)."""


@dataclass(frozen=True)
class Candidate:
    """A node the planner may use."""

    node_id: bytes  # its proven id
    health: HealthVector  # latest Health Vector (TFLOPS, RAM, power, success rate)
    rtt_ms: float | None = None  # round trip from the asker; None: use its median RTT
    roles: frozenset[str] = frozenset()  # "alpha" (RAM, AC: attention + KV), "beta" (MLP)


@dataclass(frozen=True)
class CostModel:
    """Seconds per decoded token for a layer range on a node, and per hop."""

    layer_flops: float  # FLOPs of one layer for one token (2 x its parameters)
    attn_share: float  # share of a layer's FLOPs (and weights) in attention
    layer_bytes: float  # weight bytes of one layer as served (float32)
    kv_bytes_per_layer: float  # KV cache bytes of one layer for a full context
    hidden_bytes: float  # bytes of one hidden-state row on the wire
    efficiency: float = 0.05  # share of measured peak TFLOPS a one-token matmul gets
    hop_overhead_s: float = 0.003  # fixed cost per hop: sealing, signing, scheduling
    bandwidth_bps: float = 100e6  # link throughput assumed for hidden states
    ram_share: float = 0.5  # share of a node's free RAM it may give to weights + KV
    min_success: float = 0.5  # nodes answering less often than this are left out
    rtt_unknown_ms: float = 50.0  # RTT assumed for a node never pinged
    min_battery_pct: float = 20.0  # a node on battery below this charge is left out
    battery_weight: float = 1.0  # on battery, time counts (1 + this x share of charge used)
    temp_throttle_c: float = 80.0  # above this a node's time counts more (it throttles)...
    temp_max_c: float = 95.0  # ...twice as much at or above this

    def usable(self, c: Candidate) -> bool:
        """Whether the planner may use `c` at all (answers often enough, not draining)."""
        h = c.health
        on_battery = not h.on_ac and h.battery_pct is not None
        return h.success_rate >= self.min_success and not (
            on_battery and h.battery_pct is not None and h.battery_pct < self.min_battery_pct)

    def weight(self, c: Candidate) -> float:
        """How much more than its raw speed `c`'s time counts: retries, battery, heat."""
        h = c.health
        w = 1.0 / max(h.success_rate, 1e-3)
        if not h.on_ac and h.battery_pct is not None:
            w *= 1.0 + self.battery_weight * (1.0 - h.battery_pct / 100.0)
        if h.temperature_c is not None and h.temperature_c > self.temp_throttle_c:
            span = max(self.temp_max_c - self.temp_throttle_c, 1e-9)
            w *= 1.0 + min(1.0, (h.temperature_c - self.temp_throttle_c) / span)
        return w

    @classmethod
    def for_model(cls, cfg: LlamaConfig, **overrides: float) -> CostModel:
        head_dim = cfg.hidden // cfg.n_heads
        attn = cfg.hidden * head_dim * (2 * cfg.n_heads + 2 * cfg.n_kv_heads)
        mlp = 3 * cfg.hidden * cfg.ffn
        kv = 2 * cfg.n_kv_heads * head_dim * cfg.context_length * 4
        return cls(layer_flops=2.0 * (attn + mlp), attn_share=attn / (attn + mlp),
                   layer_bytes=4.0 * (attn + mlp), kv_bytes_per_layer=float(kv),
                   hidden_bytes=4.0 * cfg.hidden, **overrides)

    def hop_s(self, c: Candidate) -> float:
        rtt = c.rtt_ms if c.rtt_ms is not None else c.health.rtt_median_ms
        rtt = self.rtt_unknown_ms if rtt is None else rtt
        wire = rtt / 1000 + self.hop_overhead_s + 2 * self.hidden_bytes * 8 / self.bandwidth_bps
        return wire * self.weight(c)

    def layer_s(self, c: Candidate, share: float = 1.0) -> float:
        flops = max(c.health.tflops, 1e-6) * 1e12 * self.efficiency
        return share * self.layer_flops / flops * self.weight(c)

    def max_layers(self, c: Candidate, part: Part = Part.FULL) -> int:
        per = {Part.FULL: self.layer_bytes + self.kv_bytes_per_layer,
               Part.ATTENTION: self.layer_bytes * self.attn_share + self.kv_bytes_per_layer,
               Part.MLP: self.layer_bytes * (1 - self.attn_share)}[part]
        return int(c.health.free_ram_mb * MB * self.ram_share // per)


@dataclass(frozen=True)
class PlannedStage:
    """One hop of the route: a stage and the nodes running it (primary first)."""

    stage: Stage
    nodes: tuple[bytes, ...]
    est_s: float  # the primary's estimated seconds per token, hop included

    def as_dict(self) -> dict[str, object]:
        return {"layers": [self.stage.start, self.stage.end], "part": self.stage.part.value,
                "nodes": [n.hex() for n in self.nodes], "est_ms": round(self.est_s * 1000, 3)}


@dataclass(frozen=True)
class Plan:
    """A route over every layer, in execution order, and what it is expected to cost."""

    stages: tuple[PlannedStage, ...]
    est_token_s: float  # estimated decode seconds per token
    left_out: tuple[bytes, ...] = field(default=())  # candidates the plan does not use

    def as_dict(self) -> dict[str, object]:
        return {"est_token_ms": round(self.est_token_s * 1000, 3),
                "stages": [s.as_dict() for s in self.stages],
                "left_out": [n.hex() for n in self.left_out]}

    def to_json(self) -> str:
        return json.dumps(self.as_dict())

    @property
    def nodes(self) -> list[bytes]:
        seen: list[bytes] = []
        for s in self.stages:
            seen += [n for n in s.nodes if n not in seen]
        return seen


@dataclass(frozen=True)
class _Unit:
    """A node (full blocks) or an alpha+beta pair (split blocks) that takes one range."""

    nodes: tuple[bytes, ...]
    hop_s: float  # per layer for a pair (two hops per layer), per range for a node
    layer_s: float
    cap: int  # most layers it can hold


def _units(cands: Sequence[Candidate], cost: CostModel, pair: tuple[int, int] | None) -> list[_Unit]:
    units = []
    for i, c in enumerate(cands):
        if pair is not None and i in pair:
            continue
        units.append(_Unit((c.node_id,), cost.hop_s(c), cost.layer_s(c), cost.max_layers(c)))
    if pair is not None:
        a, b = cands[pair[0]], cands[pair[1]]
        per_layer = (cost.hop_s(a) + cost.hop_s(b) + cost.layer_s(a, cost.attn_share)
                     + cost.layer_s(b, 1 - cost.attn_share))
        cap = min(cost.max_layers(a, Part.ATTENTION), cost.max_layers(b, Part.MLP))
        units.append(_Unit((a.node_id, b.node_id), 0.0, per_layer, cap))
    return units


def _solve(units: list[_Unit], n_layers: int) -> tuple[float, list[tuple[int, int, int]]]:
    """Min total seconds covering layers 0..n with contiguous ranges, one per unit at most."""
    inf = math.inf
    best = [[inf] * (n_layers + 1) for _ in range(len(units) + 1)]
    back: list[list[tuple[int, int] | None]] = [[None] * (n_layers + 1) for _ in range(len(units) + 1)]
    best[0][0] = 0.0
    for i, u in enumerate(units, start=1):
        for hi in range(n_layers + 1):
            best[i][hi], back[i][hi] = best[i - 1][hi], None  # unit i left out
            for lo in range(max(0, hi - u.cap), hi):
                n = hi - lo
                c = best[i - 1][lo] + (u.hop_s if len(u.nodes) == 1 else 0.0) + n * u.layer_s
                if c < best[i][hi] - 1e-15:
                    best[i][hi], back[i][hi] = c, (lo, hi)
    ranges, hi = [], n_layers
    for i in range(len(units), 0, -1):
        step = back[i][hi]
        if step is not None:
            ranges.append((i - 1, step[0], step[1]))
            hi = step[0]
    return best[len(units)][n_layers], sorted(ranges, key=lambda r: r[1])


def plan(
    candidates: Sequence[Candidate],
    n_layers: int,
    cost: CostModel,
    *,
    replicas: int = 1,
    excluded: frozenset[bytes] = frozenset(),
    split: bool = True,
) -> Plan:
    """The fastest route over `n_layers` by `cost`, with up to `replicas` nodes per stage."""
    if replicas < 1:
        raise PlanError(f"replicas must be at least 1, got {replicas}")
    usable = sorted(
        (c for c in candidates
         if c.node_id not in excluded and cost.usable(c)),
        key=lambda c: (-c.health.tflops, c.node_id),
    )
    ids = [c.node_id for c in usable]
    if len(set(ids)) != len(ids):
        raise PlanError("a node appears twice among the candidates")
    alphas = [i for i, c in enumerate(usable) if "alpha" in c.roles]
    betas = [i for i, c in enumerate(usable) if "beta" in c.roles]
    pairs: list[tuple[int, int] | None] = [None]
    if split:
        pairs += [(a, b) for a in alphas[:4] for b in betas[:4] if a != b]
    best_cost, best_units, best_ranges = math.inf, [], []
    for pair in pairs:
        units = _units(usable, cost, pair)
        total, ranges = _solve(units, n_layers)
        if total < best_cost - 1e-12:
            best_cost, best_units, best_ranges = total, units, ranges
    if not best_ranges or math.isinf(best_cost):
        raise PlanError(f"the {len(usable)} usable nodes cannot hold all {n_layers} layers")
    stages: list[PlannedStage] = []
    by_id = {c.node_id: c for c in usable}
    for ui, lo, hi in best_ranges:
        u = best_units[ui]
        if len(u.nodes) == 1:
            est = u.hop_s + (hi - lo) * u.layer_s
            stages.append(PlannedStage(Stage(lo, hi), u.nodes, est))
            continue
        a, b = (by_id[n] for n in u.nodes)
        for layer in range(lo, hi):
            stages.append(PlannedStage(Stage(layer, layer + 1, Part.ATTENTION), (a.node_id,),
                                       cost.hop_s(a) + cost.layer_s(a, cost.attn_share)))
            stages.append(PlannedStage(Stage(layer, layer + 1, Part.MLP), (b.node_id,),
                                       cost.hop_s(b) + cost.layer_s(b, 1 - cost.attn_share)))
    if replicas > 1:
        stages = _add_replicas(stages, usable, cost, replicas)
    used = {n for s in stages for n in s.nodes}
    left = tuple(sorted(c.node_id for c in candidates if c.node_id not in used))
    return Plan(tuple(stages), best_cost, left)


def _add_replicas(stages: list[PlannedStage], usable: Sequence[Candidate], cost: CostModel,
                  replicas: int) -> list[PlannedStage]:
    """Give each stage up to `replicas - 1` more nodes: the fastest with room to spare."""
    load: dict[bytes, int] = {}
    for s in stages:
        load[s.nodes[0]] = load.get(s.nodes[0], 0) + len(s.stage.layers)
    out = []
    for s in stages:
        n = len(s.stage.layers)
        options = sorted(
            (c for c in usable if c.node_id not in s.nodes
             and load.get(c.node_id, 0) + n <= cost.max_layers(c, s.stage.part)),
            key=lambda c: (cost.hop_s(c) + n * cost.layer_s(c), c.node_id),
        )
        extra = tuple(c.node_id for c in options[: replicas - 1])
        for e in extra:
            load[e] = load.get(e, 0) + n
        out.append(PlannedStage(s.stage, s.nodes + extra, s.est_s))
    return out


def fixed_plan(stages: Sequence[Stage], nodes: Sequence[Sequence[bytes]]) -> Plan:
    """A route chosen by hand (tests, benchmarks): stage i runs on `nodes[i]`."""
    if len(stages) != len(nodes) or any(not n for n in nodes):
        raise PlanError("every stage needs at least one node")
    return Plan(tuple(PlannedStage(s, tuple(n), 0.0) for s, n in zip(stages, nodes, strict=True)),
                0.0)


def plan_from_health(
    health: Mapping[bytes, HealthVector], rtt_ms: Mapping[bytes, float], cfg: LlamaConfig,
    **kwargs: object,
) -> Plan:
    """Convenience: candidates from a node id -> Health Vector map and measured RTTs."""
    cands = [Candidate(n, h, rtt_ms.get(n)) for n, h in sorted(health.items())]
    return plan(cands, cfg.n_layers, CostModel.for_model(cfg), **kwargs)  # type: ignore[arg-type]

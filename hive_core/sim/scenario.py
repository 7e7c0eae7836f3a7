"""One simulator run: N nodes join, publish Health records, then look them up under churn.

Phases, all in simulated time on a `VirtualClockLoop`:
1. join: with `join="protocol"`, node 0 starts alone and node i joins through a random
   node already in, joins spread over `join_window_s` (Kademlia bootstrap: ping, look
   itself up, refresh buckets); with `join="converged"` (faster for 1,000 nodes) the
   initial tables are filled as a settled hive's would be (see `SimNetwork.converge`);
2. publish: `records` random nodes sign and store their Health record (k replicas);
3. churn + lookups over `lookup_window_s`: `churn * N` random nodes fail silently and as
   many new nodes join, at random times, while `lookups` FIND_VALUE lookups start at
   random times from random live nodes for random published records.
A lookup whose origin fails before it ends is counted apart ("aborted"), not as a miss.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from hive_core.base.health import HealthVector
from hive_core.mesh.dht import DhtConfig, RpcError, node_key, owner_of
from hive_core.mesh.dht.records import RecordKind
from hive_core.sim.clock import run_virtual
from hive_core.sim.errors import SimError
from hive_core.sim.latency import LatencyModel, constant_latency, internet_latency
from hive_core.sim.network import SimNetwork, SimNode

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class SimConfig:
    """Parameters of one run."""

    nodes: int = 1000  # nodes in the hive before churn
    churn: float = 0.1  # share of nodes that fail silently (and of newcomers) during lookups
    lookups: int = 500  # FIND_VALUE lookups measured
    records: int = 100  # Health records published before the churn starts
    seed: int = 0  # everything (placement, ids, timings) follows from it
    latency: str = "internet"  # "internet" (RIPE Atlas) or "constant:<rtt ms>"
    join: str = "converged"  # initial hive: "converged" tables or "protocol" bootstraps
    loss: float = 0.0  # per-message loss on every link
    setup_rtts: float = 0.0  # round trips to open a link (0: links are instant)
    join_window_s: float = 0.0  # joins spread over this (0: 0.2 s per node)
    lookup_window_s: float = 120.0  # churn and lookups spread over this
    k: int = 20  # DHT bucket size / replication
    alpha: int = 3  # DHT lookup parallelism
    rpc_timeout_s: float = 2.0  # a silent peer is given up after this

    def __post_init__(self) -> None:
        if self.nodes < 2:
            raise SimError(f"--nodes must be at least 2, got {self.nodes}")
        if not 0.0 <= self.churn < 1.0:
            raise SimError(f"--churn must be in [0, 1), got {self.churn}")
        if self.lookups < 1 or self.records < 1:
            raise SimError("--lookups and --records must be at least 1")
        if self.join not in ("converged", "protocol"):
            raise SimError(f"--join must be converged or protocol, got {self.join!r}")
        if self.lookup_window_s <= 0 or self.join_window_s < 0 or self.rpc_timeout_s <= 0:
            raise SimError("windows and timeouts must be positive")

    def dht_config(self) -> DhtConfig:
        return DhtConfig(k=self.k, alpha=self.alpha, rpc_timeout_s=self.rpc_timeout_s)

    def latency_model(self, n: int) -> LatencyModel:
        if self.latency == "internet":
            return internet_latency(n, seed=self.seed)
        if self.latency.startswith("constant:"):
            try:
                rtt = float(self.latency.split(":", 1)[1])
            except ValueError:
                raise SimError(f"bad latency model {self.latency!r}") from None
            return constant_latency(n, rtt)
        raise SimError(f"unknown latency model {self.latency!r} (internet or constant:<ms>)")


@dataclass(frozen=True)
class SimReport:
    """What a run measured; times are simulated unless named wall_."""

    nodes: int
    churn: float
    failed_nodes: int  # nodes that failed during the lookup window
    new_nodes: int  # nodes that joined during it
    join_failures: int  # bootstraps that found no live seed
    mean_table_size: float  # routing-table contacts per live node at the end
    lookups: int
    completed: int  # lookups whose origin stayed up
    found: int  # completed lookups that returned the authentic record
    local_hits: int  # of which the origin held a replica itself (0 hops, no request)
    success_rate: float  # found / completed
    hops_median: float  # depth of the first holder that answered (1 = own contact);
    # hops and latency are over lookups that went to the network (local hits excluded)
    hops_p90: float
    hops_max: int
    latency_ms_median: float  # simulated time from start to record
    latency_ms_p90: float
    latency_ms_p99: float
    rpcs_per_lookup: float  # requests sent per lookup
    failed_rpcs_per_lookup: float  # of which timed out or refused
    target_hops: float  # log2(N)/2 + 2
    meets_target: bool  # median hops <= target and success >= 99 %
    links_opened: int
    rpcs_total: int
    virtual_s: float  # simulated seconds the whole run took
    wall_s: float  # real seconds it took to simulate
    latency_source: str
    config: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return float(ordered[rank - 1])


def _health_value(net: SimNetwork, node: SimNode) -> Any:
    """A plausible Health record for a simulated node (its value is what gets looked up)."""
    r = net.rng
    return HealthVector(
        tflops=round(r.uniform(0.05, 2.0), 3), battery_pct=None, on_ac=True, peers=(),
        uptime_s=net.now(), success_rate=1.0, free_ram_mb=float(r.choice((2048, 4096, 8192))),
        temperature_c=None, measured_at_ms=int(1000 * (net.epoch_s + net.now())),
    ).to_health_record()


@dataclass
class _Tally:
    hops: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    queried: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    completed: int = 0
    found: int = 0
    local_hits: int = 0
    join_failures: int = 0


async def _join_at(net: SimNetwork, node: SimNode, at: float, tally: _Tally) -> None:
    await asyncio.sleep(max(0.0, at - net.now()))
    seeds = [n for n in net.live() if n is not node]
    if not seeds:
        tally.join_failures += 1
        return
    seed = seeds[net.rng.randrange(len(seeds))]
    try:
        await net.background(node, net.join(node, seed))
    except (RpcError, asyncio.CancelledError):
        tally.join_failures += 1


async def _fail_at(net: SimNetwork, at: float) -> None:
    await asyncio.sleep(max(0.0, at - net.now()))
    live = net.live()
    if len(live) > 1:
        net.fail(live[net.rng.randrange(len(live))])


async def _lookup_at(net: SimNetwork, at: float, key: bytes, owner: bytes, tally: _Tally) -> None:
    await asyncio.sleep(max(0.0, at - net.now()))
    live = net.live()
    if not live:
        return  # the whole hive is down: nothing to look up from (counted as aborted)
    origin = live[net.rng.randrange(len(live))]
    start = net.now()
    try:
        result = await net.background(origin, origin.dht.find_value(key))
    except asyncio.CancelledError:
        return  # the origin failed mid-lookup: aborted, not a miss
    tally.completed += 1
    tally.queried.append(result.queried)
    tally.failed.append(result.failed)
    if any(r.key == key and owner_of(r) == owner for r in result.records):
        tally.found += 1
        if result.queried == 0:
            tally.local_hits += 1  # the origin holds a replica: no network, kept out of hops
            return
        tally.hops.append(float(result.hops))
        tally.latency_ms.append(1000.0 * (net.now() - start))


async def run_simulation(cfg: SimConfig, progress: Progress | None = None) -> SimReport:
    """Run `cfg` on the current loop (use `simulate` for a virtual-time loop)."""
    wall0 = time.perf_counter()
    say = progress or (lambda phase, done, total: None)
    n_new = round(cfg.churn * cfg.nodes)
    latency = cfg.latency_model(cfg.nodes + n_new)
    net = SimNetwork(latency, cfg.dht_config(), seed=cfg.seed, loss=cfg.loss,
                     setup_rtts=cfg.setup_rtts)
    tally = _Tally()
    rng = net.rng
    try:
        if cfg.join == "converged":
            say("join", 0, cfg.nodes)
            net.converge([net.spawn(i) for i in range(cfg.nodes)])
            say("join", cfg.nodes, cfg.nodes)
        else:
            await net.join(net.spawn(0), None)
            window = cfg.join_window_s or 0.2 * cfg.nodes
            joins = [asyncio.ensure_future(
                _join_at(net, net.spawn(i), window * i / cfg.nodes, tally))
                for i in range(1, cfg.nodes)]
            await _gather_with_progress(joins, "join", say)
        await asyncio.sleep(10.0)

        publishers = rng.sample(net.live(), min(cfg.records, len(net.live())))
        published = [(node_key(p.node_id, RecordKind.HEALTH), p.node_id) for p in publishers]
        puts = [net.background(p, p.dht.publish(_health_value(net, p))) for p in publishers]
        await _gather_with_progress(puts, "publish", say)

        t0, w = net.now(), cfg.lookup_window_s
        churn = [asyncio.ensure_future(_fail_at(net, t0 + rng.uniform(0, w))) for _ in range(n_new)]
        churn += [asyncio.ensure_future(_join_at(net, net.spawn(cfg.nodes + j),
                                                 t0 + rng.uniform(0, w), tally))
                  for j in range(n_new)]
        looks = []
        for _ in range(cfg.lookups):
            key, owner = published[rng.randrange(len(published))]
            looks.append(asyncio.ensure_future(
                _lookup_at(net, t0 + rng.uniform(0, w), key, owner, tally)))
        await _gather_with_progress(looks, "lookup", say)
        await asyncio.gather(*churn)
        failed_nodes = sum(1 for n in net.by_index.values() if not n.alive)
        live = net.live()
        tables = [len(n.dht.routing) for n in live]
        virtual_s = net.now()
    finally:
        await net.shutdown()
    return _report(cfg, net, tally, failed_nodes, n_new, tables, virtual_s,
                   time.perf_counter() - wall0)


async def _gather_with_progress(tasks: Sequence[asyncio.Future[Any]], phase: str,
                                say: Progress) -> list[Any]:
    total = len(tasks)
    say(phase, 0, total)
    step = max(1, total // 20)
    for done, fut in enumerate(asyncio.as_completed(tasks), start=1):
        await fut
        if done % step == 0 or done == total:
            say(phase, done, total)
    return [t.result() for t in tasks]


def _report(cfg: SimConfig, net: SimNetwork, t: _Tally, failed_nodes: int, n_new: int,
            tables: list[int], virtual_s: float, wall_s: float) -> SimReport:
    success = t.found / t.completed if t.completed else 0.0
    hops_median = statistics.median(t.hops) if t.hops else math.nan
    target = math.log2(cfg.nodes) / 2 + 2
    return SimReport(
        nodes=cfg.nodes, churn=cfg.churn, failed_nodes=failed_nodes, new_nodes=n_new,
        join_failures=t.join_failures,
        mean_table_size=statistics.fmean(tables) if tables else 0.0,
        lookups=cfg.lookups, completed=t.completed, found=t.found, local_hits=t.local_hits,
        success_rate=success,
        hops_median=hops_median, hops_p90=percentile(t.hops, 90),
        hops_max=int(max(t.hops)) if t.hops else 0,
        latency_ms_median=statistics.median(t.latency_ms) if t.latency_ms else math.nan,
        latency_ms_p90=percentile(t.latency_ms, 90), latency_ms_p99=percentile(t.latency_ms, 99),
        rpcs_per_lookup=statistics.fmean(t.queried) if t.queried else 0.0,
        failed_rpcs_per_lookup=statistics.fmean(t.failed) if t.failed else 0.0,
        target_hops=target, meets_target=bool(hops_median <= target and success >= 0.99),
        links_opened=net.links_opened, rpcs_total=net.rpcs, virtual_s=virtual_s,
        wall_s=wall_s, latency_source=net.latency.source, config=asdict(cfg),
    )


def simulate(cfg: SimConfig, progress: Progress | None = None) -> SimReport:
    """Run `cfg` on a fresh virtual-time loop and return its report."""
    return run_virtual(run_simulation(cfg, progress))

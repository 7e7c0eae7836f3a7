"""`cadencia sim`: simulate a hive's DHT in one process on real internet latencies."""

from __future__ import annotations

import argparse
import json
import math
import sys

NAME = "sim"
HELP = "simulate N DHT nodes with churn on RIPE Atlas latencies; report hops, latency, success"
DESCRIPTION = (
    "Run N real DHT nodes (signed records, wire codec, in-memory channels) in one process on "
    "simulated time: nodes are placed in countries and their RTTs drawn from the RIPE Atlas "
    "country data shipped with cadencia (set $CADENCIA_RTT_DATA to use another file of the same "
    "columns). Records are published, then --churn x N nodes fail silently and as many join "
    "while --lookups lookups run. Latencies reported are simulated network time, not CPU time."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from hive_core.mesh.runner import number, text

    parser.add_argument("--nodes", type=number(int, 2, 100_000), default=1000, metavar="N",
                        help="hive size (default 1000)")
    parser.add_argument("--churn", type=number(float, 0, 0.99), default=0.1, metavar="F",
                        help="share of nodes failing (and joining) during lookups (default 0.1)")
    parser.add_argument("--lookups", type=number(int, 1, 1_000_000), default=500, metavar="L",
                        help="lookups to measure (default 500)")
    parser.add_argument("--records", type=number(int, 1, 1_000_000), default=100, metavar="R",
                        help="Health records published before the churn (default 100)")
    parser.add_argument("--join", choices=("converged", "protocol"), default="converged",
                        help="initial hive: settled routing tables (fast), or every node running "
                             "the bootstrap protocol (slow above a few hundred nodes)")
    parser.add_argument("--latency", default="internet", metavar="MODEL",
                        type=text("the latency model", max_chars=64),
                        help="'internet' (RIPE Atlas, default) or 'constant:<rtt ms>'")
    parser.add_argument("--loss", type=number(float, 0, 0.99), default=0.0,
                        help="per-message loss on every link")
    parser.add_argument("--setup-rtts", type=number(float, 0, 100), default=0.0, metavar="R",
                        help="round trips to open a new link (default 0: instant)")
    parser.add_argument("--k", type=number(int, 1, 1000), default=20,
                        help="bucket size / replication (default 20)")
    parser.add_argument("--alpha", type=number(int, 1, 100), default=3,
                        help="lookup parallelism (default 3)")
    parser.add_argument("--seed", type=number(int, 0, 2**63 - 1), default=0,
                        help="random seed (default 0)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")


def _fmt(x: float, digits: int = 1) -> str:
    return "n/a" if isinstance(x, float) and math.isnan(x) else f"{x:.{digits}f}"


def run(args: argparse.Namespace) -> int:
    from hive_core.sim import SimConfig, simulate

    cfg = SimConfig(nodes=args.nodes, churn=args.churn, lookups=args.lookups,
                    records=args.records, seed=args.seed, latency=args.latency, loss=args.loss,
                    setup_rtts=args.setup_rtts, join=args.join, k=args.k, alpha=args.alpha)

    def progress(phase: str, done: int, total: int) -> None:
        end = "\n" if done == total else ""
        if sys.stderr.isatty() or done == total:
            print(f"\r{phase}: {done}/{total}", end=end, file=sys.stderr, flush=True)

    report = simulate(cfg, progress)
    if args.json:
        print(json.dumps(_clean(report.as_dict()), allow_nan=False))
        return 0
    r = report
    print(f"{r.nodes} nodes, churn {r.churn:.0%} ({r.failed_nodes} failed, {r.new_nodes} joined), "
          f"{r.latency_source}")
    print(f"lookups: {r.found}/{r.completed} found ({r.success_rate:.2%}), "
          f"{r.lookups - r.completed} aborted (origin failed), {r.local_hits} local hits")
    print(f"hops: median {_fmt(r.hops_median)}, p90 {_fmt(r.hops_p90)}, max {r.hops_max} "
          f"(target <= {r.target_hops:.2f}: {'met' if r.meets_target else 'NOT met'})")
    print(f"latency (simulated): median {_fmt(r.latency_ms_median)} ms, "
          f"p90 {_fmt(r.latency_ms_p90)} ms, p99 {_fmt(r.latency_ms_p99)} ms")
    print(f"requests per lookup {r.rpcs_per_lookup:.1f} ({r.failed_rpcs_per_lookup:.2f} failed); "
          f"routing table {r.mean_table_size:.0f} contacts; {r.virtual_s:.0f} s simulated "
          f"in {r.wall_s:.1f} s")
    return 0


def _clean(d: dict[str, object]) -> dict[str, object]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}

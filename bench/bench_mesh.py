"""Benchmark of the mesh: data-channel RTT and throughput, clean and lossy, before/after SCTP
tuning; DHT lookup hops, latency and success in the simulator at 100 and 1,000 nodes.

Run: `.venv/bin/python -m bench.bench_mesh [--quick]`. Prints markdown tables:

1. Data channel. Round trips of 64-byte ping/echo messages (median, p99) and one-way
   throughput of 64 KiB messages, on
   - real aiortc on loopback, direct;
   - real aiortc through a UDP relay on loopback that delays every datagram 10 ms each
     way (20 ms RTT) and drops 5 % of them (`hive_core.sim.udprelay`; the kernel here has
     no netem); shaping starts once the connection is up;
   - the in-memory channel with the same 20 ms + 5 % loss, reliable and ordered, its
     retransmission timeout set as aiortc's (1 s minimum) or as the tuned one (floor
     0.1 s; srtt + 4 rttvar is below that on a 20 ms link). This is a model of SCTP's
     timer, not SCTP: it has no congestion window, so its throughput is not comparable.
   "default" is aiortc 1.16 as shipped; "tuned" is `hive_core.mesh.sctptuning.SctpTuning()`.
2. Simulator (`hive_core.sim`, virtual time; latencies are simulated network time):
   FIND_VALUE lookups of Health records with 10 % churn (nodes failing silently and as
   many joining during the lookups), RIPE Atlas country RTTs. Target: median hops
   <= log2(N)/2 + 2 and >= 99 % success. "protocol": every node joined by the real
   bootstrap; "converged": initial tables filled as a settled hive's (faster to build,
   an idealised best case; `--protocol-1000` adds the real-bootstrap 1,000-node run).
   Hops and latency count lookups that went to the network; local hits are apart.

Timings of part 1 are wall-clock on a shared machine: expect noise.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hive_core.mesh.channel import Channel
from hive_core.mesh.memchannel import LinkProfile, memory_pair
from hive_core.sim import SimConfig, simulate
from hive_core.sim.scenario import percentile
from hive_core.sim.udprelay import Shaping, UdpRelay

PING_BYTES = 64
BULK_MESSAGE = 64 * 1024
ONE_WAY_S = 0.010
LOSS = 0.05


@dataclass(frozen=True)
class ChannelResult:
    """One row of table 1."""

    label: str
    rtt_ms_median: float
    rtt_ms_p99: float
    pings: int
    mbit_s: float
    bulk_bytes: int
    note: str = ""


async def _echo(ch: Channel) -> None:
    async for msg in ch:
        if msg[:1] == b"p":
            await ch.send(msg)
        elif msg[:1] == b"e":
            await ch.send(b"done")


async def measure(a: Channel, b: Channel, pings: int, bulk_bytes: int,
                  bulk_timeout_s: float) -> tuple[list[float], float]:
    """Sequential ping RTTs (seconds) and bulk throughput a -> b (Mbit/s, NaN on timeout)."""
    echo = asyncio.ensure_future(_echo(b))
    loop = asyncio.get_running_loop()
    rtts = []
    try:
        for i in range(pings):
            msg = b"p" + i.to_bytes(4, "big") + bytes(PING_BYTES - 5)
            t0 = loop.time()
            await a.send(msg)
            reply = await asyncio.wait_for(a.recv(), 30.0)
            if reply != msg:
                raise RuntimeError("echo mismatch")
            rtts.append(loop.time() - t0)
        chunk = b"b" + bytes(BULK_MESSAGE - 1)

        async def bulk() -> None:
            for _ in range(bulk_bytes // BULK_MESSAGE):
                await a.send(chunk)
            await a.send(b"e")
            while await a.recv() != b"done":
                pass

        t0 = loop.time()
        try:
            await asyncio.wait_for(bulk(), bulk_timeout_s)
            mbit = 8 * bulk_bytes / (loop.time() - t0) / 1e6
        except TimeoutError:
            mbit = math.nan
    finally:
        echo.cancel()
        await asyncio.gather(echo, return_exceptions=True)
    return rtts, mbit


def _row(label: str, rtts: list[float], mbit: float, bulk: int, note: str = "") -> ChannelResult:
    ms = [1000 * r for r in rtts]
    return ChannelResult(label, statistics.median(ms), percentile(ms, 99), len(ms), mbit, bulk, note)


async def aiortc_case(tuned: bool, lossy: bool, pings: int, bulk: int) -> ChannelResult:
    from hive_core.mesh.rtc import RTCOptions, connect_pair

    opts = RTCOptions.loopback() if tuned else RTCOptions.loopback(sctp=None)
    relay = await UdpRelay(seed=7).start() if lossy else None
    kwargs: dict[str, Any] = {}
    if relay is not None:
        kwargs = {"rewrite_offer": relay.rewrite_offer, "rewrite_answer": relay.rewrite_answer}
    a, b, ca, cb = await asyncio.wait_for(connect_pair(opts, opts, **kwargs), 30.0)
    try:
        if relay is not None:
            relay.shaping = Shaping(delay_s=ONE_WAY_S, loss=LOSS)
        rtts, mbit = await measure(ca, cb, pings, bulk, bulk_timeout_s=60.0)
    finally:
        await asyncio.gather(a.close(), b.close(), return_exceptions=True)
        if relay is not None:
            relay.close()
    where = "relay 20 ms + 5 % loss" if lossy else "loopback"
    note = f"{relay.dropped}/{relay.received} datagrams dropped" if relay is not None else ""
    return _row(f"aiortc, {where}, {'tuned' if tuned else 'default'}", rtts, mbit, bulk, note)


async def memory_case(tuned: bool, pings: int, bulk: int) -> ChannelResult:
    profile = LinkProfile(latency_s=ONE_WAY_S, loss=LOSS, reliable=True, ordered=True,
                          rto_s=0.1 if tuned else 1.0)
    a, b = memory_pair(profile=profile, seed=11)
    rtts, mbit = await measure(a, b, pings, bulk, bulk_timeout_s=60.0)
    await a.close()
    label = f"in-memory 20 ms + 5 % loss, RTO {'0.1' if tuned else '1.0'} s"
    return _row(label, rtts, mbit, bulk, "timer model, no congestion window")


def channel_table(results: list[ChannelResult]) -> str:
    lines = ["| channel | pings | RTT median (ms) | RTT p99 (ms) | throughput (Mbit/s) | note |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in results:
        tp = "timeout" if math.isnan(r.mbit_s) else f"{r.mbit_s:.1f} ({r.bulk_bytes >> 20} MiB)"
        lines.append(f"| {r.label} | {r.pings} | {r.rtt_ms_median:.1f} | {r.rtt_ms_p99:.1f} | "
                     f"{tp} | {r.note} |")
    return "\n".join(lines)


def sim_table(rows: list[tuple[str, Any]]) -> str:
    lines = [("| nodes | initial tables | lookups (done) | success | local hits | hops median | "
             "hops p90 / max | target | latency median / p99 (ms) | req/lookup | wall (s) |"),
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for join, r in rows:
        lines.append(
            f"| {r.nodes} | {join} | {r.lookups} ({r.completed}) | {100 * r.success_rate:.1f} % | "
            f"{r.local_hits} | {r.hops_median:.1f} | {r.hops_p90:.0f} / {r.hops_max} | "
            f"<= {r.target_hops:.2f}: {'met' if r.meets_target else 'NOT met'} | "
            f"{r.latency_ms_median:.0f} / {r.latency_ms_p99:.0f} | {r.rpcs_per_lookup:.1f} | "
            f"{r.wall_s:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer pings, smaller runs")
    parser.add_argument("--no-aiortc", action="store_true", help="skip the aiortc rows")
    parser.add_argument("--no-sim", action="store_true", help="skip the simulator table")
    parser.add_argument("--protocol-1000", action="store_true",
                        help="also build the 1,000-node hive by real bootstraps (~10 min)")
    args = parser.parse_args(argv)
    pings, bulk = (60, 1 << 20) if args.quick else (400, 8 << 20)
    say: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)

    results: list[ChannelResult] = []
    cases: list[tuple[str, Any]] = []
    if not args.no_aiortc:
        for lossy in (False, True):
            for tuned in (False, True):
                cases.append(("aiortc", (tuned, lossy)))
    for tuned in (False, True):
        cases.append(("memory", tuned))
    for kind, param in cases:
        t0 = time.perf_counter()
        if kind == "aiortc":
            res = asyncio.run(aiortc_case(param[0], param[1], pings, bulk))
        else:
            res = asyncio.run(memory_case(param, pings, bulk))
        say(f"{res.label}: {time.perf_counter() - t0:.1f} s")
        results.append(res)
    print("## Data channel: RTT and throughput\n")
    print(channel_table(results))

    if not args.no_sim:
        lookups = 200 if args.quick else 1000
        runs = [(100, "protocol"), (1000, "converged")]
        if args.protocol_1000:
            runs.append((1000, "protocol"))
        sims = []
        for n, join in runs:
            cfg = SimConfig(nodes=n, churn=0.1, lookups=lookups, records=100, join=join, seed=1)
            t0 = time.perf_counter()
            sims.append((join, simulate(cfg)))
            say(f"sim {n} nodes ({join}): {time.perf_counter() - t0:.1f} s")
        print("\n## Simulator: DHT lookups with 10 % churn, RIPE Atlas latencies\n")
        print(sim_table(sims))
        print(f"\nlatency model: {sims[0][1].latency_source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

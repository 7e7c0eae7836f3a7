"""A real sentinel (`cadencia sentinel`, its own process) under a connection flood keeps
answering `hive status` and letting known nodes rejoin, in bounded memory.

Adversary: a botnet of 20 hosts (20 loopback source addresses) holding 1,000 slow
connections (HTTP upgrades trickled a byte at a time, never finished) and 1,000 silent ones
(upgraded and authenticated, each with a fresh key, then mute), reconnecting whenever the
sentinel drops one, for the whole measurement. Before the admission budgets, about 256 such
connections locked everyone out (0 of 14 status calls got through).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from hive_core.base.identity import Identity
from hive_core.mesh.hivenode import HiveNode
from hive_core.mesh.status import fetch_status

from .conftest import FAST

pytestmark = [pytest.mark.net, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
FLOOD_S = 25.0
SLOW = SILENT = 1000
STATUS_CALLS = 30  # started one by one over CALLS_S seconds of the flood
JOINS = 5  # known nodes rejoining, one every CALLS_S / JOINS seconds
CALLS_S = 15.0


async def start_sentinel(data_dir: Path) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cadencia", "sentinel", "--listen", "127.0.0.1:0", "--json",
        "--tflops", "1", "--no-world", "--data-dir", str(data_dir),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, cwd=ROOT)
    assert proc.stdout is not None
    ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), 60))
    return proc, ready["listen"]


async def test_status_and_known_joins_get_through_a_flood_of_2000_connections(
    tmp_path: Path,
) -> None:
    sentinel, url = await start_sentinel(tmp_path / "sentinel")
    flood = None
    try:
        rss = psutil.Process(sentinel.pid)
        # A loaded 2-core machine may take seconds to answer: the default handshake timeout.
        config = replace(FAST, join=(url,), listen=None, handshake_timeout_s=10.0)
        known = [Identity.from_seed(bytes([7, k]).ljust(32, b"\0")) for k in range(JOINS)]
        # Each had a data channel with the sentinel: to it, they are now known nodes.
        first = [HiveNode(k, config) for k in known]
        await asyncio.wait_for(asyncio.gather(*(n.start() for n in first)), 60)
        assert all(n.node.peers.rtc_links() for n in first)
        await asyncio.gather(*(n.close() for n in first))
        await fetch_status(url, timeout_s=10)
        baseline_mb = rss.memory_info().rss / 2**20  # aiortc loaded, links served

        flood = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "tests" / "mesh" / "flood.py"), url, "--slow", str(SLOW),
            "--silent", str(SILENT), "--sources", "20", "--seconds", str(FLOOD_S),
            stdout=asyncio.subprocess.PIPE, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert flood.stdout is not None
        flooding = json.loads(await asyncio.wait_for(flood.stdout.readline(), 30))
        assert flooding["event"] == "flooding"
        outcomes: dict[str, list[tuple[str, float]]] = {"status": [], "join": []}
        samples: list[float] = []

        async def status() -> None:
            t0 = time.monotonic()
            try:
                view = await fetch_status(url, timeout_s=20)
                result = "ok" if view["nodes"] else "no nodes"
            except ConnectionError as exc:
                result = str(exc)
            outcomes["status"].append((result, time.monotonic() - t0))

        async def join(identity: Identity) -> None:
            node = HiveNode(identity, config)
            t0 = time.monotonic()
            try:
                await asyncio.wait_for(node.start(), 30)
                result = "ok" if node.node.peers.all() else "no link"
            except (ConnectionError, TimeoutError) as exc:
                result = repr(exc)
            finally:
                await node.close()
            outcomes["join"].append((result, time.monotonic() - t0))

        async def memory(until: float) -> None:
            while time.monotonic() < until:
                samples.append(rss.memory_info().rss / 2**20)
                await asyncio.sleep(0.5)

        # Calls start at a steady pace while the flood is on, each in its own task, so a slow
        # answer does not thin out the sample.
        start = time.monotonic()
        calls = [asyncio.ensure_future(memory(start + FLOOD_S - 2))]
        for k in range(STATUS_CALLS):
            calls.append(asyncio.ensure_future(status()))
            if k % (STATUS_CALLS // JOINS) == 0 and k // (STATUS_CALLS // JOINS) < JOINS:
                calls.append(asyncio.ensure_future(join(known[k // (STATUS_CALLS // JOINS)])))
            await asyncio.sleep(CALLS_S / STATUS_CALLS)
        await asyncio.gather(*calls)
        done = json.loads(await asyncio.wait_for(flood.stdout.readline(), 60))
        await flood.wait()
    finally:
        if flood is not None and flood.returncode is None:
            flood.kill()
        sentinel.terminate()
        await sentinel.wait()

    def summary(kind: str) -> str:
        got = outcomes[kind]
        ok = [t for r, t in got if r == "ok"]
        return (f"{len(ok)}/{len(got)} (median {sorted(ok)[len(ok) // 2] if ok else 0:.2f} s, "
                f"max {max(ok, default=0):.2f} s)")

    report = (f"status {summary('status')}, known joins {summary('join')}; flood {done}; "
              f"sentinel RSS {baseline_mb:.1f} MB before, peak {max(samples):.1f}, last "
              f"{samples[-1]:.1f}; load {os.getloadavg()[0]:.1f}")
    print(report)
    every = outcomes["status"] + outcomes["join"]
    failures = [r for r, _ in every if r != "ok"]
    # The flood was on all along: thousands of connections, its keys authenticated and dropped.
    assert done["connects"] > 3 * (SLOW + SILENT) and done["authenticated"] > SILENT, report
    assert len(outcomes["status"]) == STATUS_CALLS and len(outcomes["join"]) == JOINS, report
    assert len(failures) <= 0.05 * len(every), f"{report}; failures: {failures[:5]}"
    assert not any("expected a Hello" in f for f in failures), failures
    # Memory is bounded by the budgets, not by the flood: it levels off.
    assert max(samples) - baseline_mb < 64, report
    half = samples[len(samples) // 2:]
    assert max(half) - min(half) < 12, report

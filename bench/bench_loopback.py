"""The loopback hive against local compute: `cadencia hive up --nodes 4` and `cadencia ask`,
against `cadencia generate`, on this machine.

Run: `.venv/bin/python -m bench loopback [--quick]` (or `python -m bench.bench_loopback`).
Prints a markdown table.

`hive up --nodes 4` starts a sentinel and four node processes (2 stages x 2 replicas); `ask
--threads 1` runs in each mode (cascade and star, verified or not) and `generate --threads 1`
runs after each round, so both sides see the same busy minutes of shared cores. One thread
each: on a loaded 2-core machine two OpenMP threads per process spin against everyone else's
processes. The hive is measured twice: with the direct LAN links nodes open between them by
default (`hive_core.mesh.lan`), then with data channels only (CADENCIA_LAN_LINKS=0).
Targets (the issue's) are printed beside, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
from typing import Any

from bench.wan_hive import LOOP_MODES, loopback_hive


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def speeds(runs: list[dict[str, Any] | str], key: str = "tokens_per_s") -> list[float]:
    return [float(r[key]) for r in runs if isinstance(r, dict)]


async def loopback_section(work: str, quick: bool) -> None:
    """`hive up --nodes 4` asked in each mode, against `generate`, interleaved: with the direct
    LAN links nodes open by default, then with data channels only."""
    n_new, rounds = (32, 2) if quick else (64, 3)
    lan = await loopback_hive(os.path.join(work, "lan"), n_new, rounds)
    rtc = await loopback_hive(os.path.join(work, "rtc"), n_new, rounds, lan=False,
                              modes=LOOP_MODES[:1] + LOOP_MODES[2:3])
    print("## Loopback: `cadencia hive up --nodes 4` (2 stages x 2 replicas) and "
          "`cadencia ask --threads 1`, against `cadencia generate --threads 1`\n")
    print(f"{n_new} new tokens; each row is the median of {rounds} runs, each round of asks "
          "followed by a `generate` on the same machine, and is compared with the median of the "
          "`generate` runs of its own hive's block (range of the runs in brackets).\n")
    print("| links | run | TTFT s | decode tok/s | vs local | same tokens | target |")
    print("|---|---|---|---|---|---|---|")
    for label, res in (("direct LAN links (default)", lan), ("data channels only", rtc)):
        local = speeds(res["local"])
        base = median(local)
        ref = next((r["new_ids"] for r in res["local"] if isinstance(r, dict)), None)
        print(f"| {label} | local generate | {median(speeds(res['local'], 'ttft_s')):.2f} | "
              f"{base:.1f} ({min(local, default=0):.1f}-{max(local, default=0):.1f}) | "
              "100 % | - | |")
        for name, runs in res.items():
            if name == "local":
                continue
            tps = speeds(runs)
            lost = [r for r in runs if not isinstance(r, dict)]
            target = ">= 80 %" if name.startswith("not verified") else ">= 70 %"
            cell_tps = (f"{median(tps):.1f} ({min(tps):.1f}-{max(tps):.1f})" if tps
                        else f"failed: {str(lost[0])[:60]}")
            vs = f"{100 * median(tps) / base:.0f} %" if tps else "-"
            same = "yes" if ref is not None and all(
                isinstance(r, dict) and r["new_ids"] == ref for r in runs) else "NO"
            print(f"| {label} | ask, {name} | {median(speeds(runs, 'ttft_s')):.2f} | {cell_tps} "
                  f"| {vs} | {same} | {target} |", flush=True)
    print("\nTargets apply to the default links; the second block shows what the direct links "
          "are worth (`--no-lan-links`, or CADENCIA_LAN_LINKS=0, turns them off).\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_loopback", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: 32 tokens, 2 rounds")
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="cadencia-loopback-")
    try:
        asyncio.run(loopback_section(work, args.quick))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

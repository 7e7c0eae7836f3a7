"""What one hop costs beyond the wire and the compute, per part, on a loopback hive.

Each part (framing, sealing, signing, hashing) is measured alone on a real request and reply;
thread and process hand-offs by micro-benchmarks of the same mechanisms; the live hive's
processes run with `CADENCIA_HOP_TIMING` (`hive_core.base.hoptiming`) and report every call
they made while making the tokens, and their CPU time from /proc.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.wan_hive import Mode, Scenario, wan_hive
from hive_core.base.hoptiming import ENV as HOP_ENV
from hive_core.base.hoptiming import PARTS
from hive_core.mesh.node import LAN_ENV

# -- what a hop costs beyond the wire and the compute -------------------------------------------

ECHO = (  # the StageWorker's mechanism: u32-length frames over a child's stdin/stdout pipes
    "import struct, sys\n"
    "r, w = sys.stdin.buffer, sys.stdout.buffer\n"
    "while True:\n"
    "    head = r.read(4)\n"
    "    if len(head) < 4: break\n"
    "    body = r.read(struct.unpack('<I', head)[0])\n"
    "    w.write(head + body); w.flush()\n")
ROW_BYTES = 576 * 4  # one SmolLM2 hidden row as float32
# Records republished every 150 s and pings every 2 s (the default): the DHT's upkeep rounds
# (a hundred messages each) stay out of the seconds a hop is timed in.
UPKEEP_APART = ("--record-ttl", "600", "--ping-interval", "2")


def median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


async def thread_handoff_us(n: int = 2000) -> float:
    """A round trip from the event loop to a one-thread pool and back (how a server hands a
    step to its compute thread), doing nothing there."""
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(1) as pool:
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            await loop.run_in_executor(pool, int)
            samples.append(time.perf_counter() - t0)
    return median_us(samples)


def process_handoff_us(n: int = 500) -> float:
    """A hidden row to a child process and back over pipes (a game's `StageWorker`)."""
    child = subprocess.Popen([sys.executable, "-c", ECHO], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    frame = struct.pack("<I", ROW_BYTES) + bytes(ROW_BYTES)
    samples = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            child.stdin.write(frame)
            child.stdin.flush()
            child.stdout.read(len(frame))
            samples.append(time.perf_counter() - t0)
    finally:
        child.stdin.close()
        child.wait(10)
    return median_us(samples)


def best_us(fn: Callable[[], object], n: int = 300) -> float:
    """Median microseconds of `fn()` over `n` calls."""
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return median_us(samples)


def hop_path_us(verified: bool) -> dict[str, float]:
    """Microseconds each part of one decode hop costs, on a real request and reply (one
    hidden row, sealed both ways; with verification the server signs the Merkle roots of its
    input and output and the asker checks the signature and the output's root)."""
    from hive_core.base.codec import decode, encode
    from hive_core.base.identity import Identity
    from hive_core.base.stage import Part
    from hive_core.exec.kernel import kernel_class
    from hive_core.protocol.inference import ErrorCode, KvKind, RunStage, StageResult
    from hive_core.trust.attest import attest, check_attestation
    from hive_core.trust.merkle import merkle_root
    from hive_core.trust.seal import box_between, open_sealed, seal

    asker, server = Identity.generate(), Identity.generate()
    box_a, box_s = box_between(asker, server.public_key), box_between(server, asker.public_key)
    row, ctx, sid = os.urandom(ROW_BYTES), os.urandom(40), os.urandom(16)
    sealed = seal(box_a, row, ctx)
    att = attest(server, session_id=sid, step=1, layer_start=1, layer_end=15, part=Part.FULL,
                 position=40, tokens=1, input_bytes=row, output_bytes=row, model=bytes(32),
                 kv=0, kernel=kernel_class("packed")) if verified else None
    req = RunStage(1, sid, 1, 1, 15, Part.FULL, 40, 1, KvKind.FP32, verified, sealed)
    rep = StageResult(1, ErrorCode.OK, "", 41, 0.01, att, sealed)
    req_b, rep_b = encode(req), encode(rep)
    out = {
        "framing": best_us(lambda: encode(req)) + best_us(lambda: decode(req_b))
        + best_us(lambda: encode(rep)) + best_us(lambda: decode(rep_b)),
        "sealing": 2 * (best_us(lambda: seal(box_a, row, ctx))
                        + best_us(lambda: open_sealed(box_s, sealed, ctx))),
        "signing": 0.0, "hashing": 0.0,
    }
    if att is not None:
        out["signing"] = best_us(lambda: server.sign(row[:200])) + best_us(
            lambda: check_attestation(att))
        out["hashing"] = 3 * best_us(lambda: merkle_root(row))
    return out


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a live process has used, from /proc."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timing_totals(where: str) -> dict[str, tuple[int, float]]:
    """Per-part calls and seconds summed over every process that wrote to `where`."""
    out: dict[str, tuple[int, float]] = {}
    for name in os.listdir(where) if os.path.isdir(where) else ():
        with open(os.path.join(where, name), encoding="utf-8") as f:
            for part, (calls, secs) in json.load(f).items():
                c, t = out.get(part, (0, 0.0))
                out[part] = (c + int(calls), t + float(secs))
    return out


async def hop_costs(work: str, model: str, n_new: int, tflops: float,
                    compute_ms: float) -> float | None:
    """A 2-stage loopback hive of separate processes, timed per part (`hoptiming`): each mode
    asks a short and a long answer; what every process spent during the long one less what
    it spent during the short one is what the extra tokens cost (joining, routing and the
    session's end cancel out). Returns the ms a hop costs beyond compute, not verified."""
    stages, short = 2, 4
    where = os.path.join(work, "timing")
    seen: dict[str, dict[str, tuple[int, float]]] = {}
    cpu: dict[str, list[float]] = {}
    order: list[str] = []

    async def snapshot(name: str, procs: list[asyncio.subprocess.Process]) -> None:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGUSR1)
        await asyncio.sleep(1.0)  # each writes its file from its signal handler
        seen[name] = timing_totals(where)
        cpu[name] = [cpu_s(proc.pid) for proc in procs]
        order.append(name)

    def spent(name: str) -> tuple[dict[str, tuple[int, float]], list[float]]:
        """Hook totals and CPU seconds per process during the ask `name`."""
        before = order[order.index(name) - 1]
        parts = {p: (n - seen[before].get(p, (0, 0.0))[0], t - seen[before].get(p, (0, 0.0))[1])
                 for p, (n, t) in seen[name].items()}
        return parts, [b - a for a, b in zip(cpu[before], cpu[name], strict=True)]

    names = (("not verified", ["--replicas", "1", "--no-verify"]),
             ("verified", ["--replicas", "1"]))
    modes: list[Mode] = []
    for name, flags in names:
        modes += [(f"{name} short", [*flags, "--max-new-tokens", str(short)], {}),
                  (name, flags, {})]
    res, _ = await wan_hive(Scenario("loopback", "", ("",) * stages), None, model,
                            os.path.join(work, "hop"), n_new, modes, tflops,
                            {HOP_ENV: where, LAN_ENV: "0"},  # the data channel's hop
                            snapshot, UPKEEP_APART)
    runs: dict[str, tuple[dict[str, Any] | str, dict[str, tuple[float, float]]]] = {}
    cpu_ms: dict[str, list[float]] = {}
    for name, _ in names:
        long_r, short_r = res[name], res[f"{name} short"]
        if not (isinstance(long_r, dict) and isinstance(short_r, dict)
                and {name, f"{name} short"} <= set(order)):
            runs[name] = (long_r, {})
            continue
        extra = len(long_r["new_ids"]) - len(short_r["new_ids"])
        (p_long, c_long), (p_short, c_short) = spent(name), spent(f"{name} short")
        runs[name] = (long_r, {p: ((n - p_short.get(p, (0, 0.0))[0]) / extra,
                                   (t - p_short.get(p, (0, 0.0))[1]) / extra)
                               for p, (n, t) in p_long.items()})
        cpu_ms[name] = [(a - b) * 1000 / extra for a, b in zip(c_long, c_short, strict=True)]
    thread_us, process_us = await thread_handoff_us(), process_handoff_us()
    path = {name: hop_path_us(name == "verified") for name, _ in names}
    print(f"## One hop on loopback, per part (2 stages, 1 replica, separate processes; an "
          f"answer of {n_new} tokens against one of {short})\n")
    print("| part | " + " | ".join(f"{n}: µs a hop" for n in runs) + " |")
    print("|---|" + "---|" * len(runs))
    for part in PARTS:
        print(f"| {part} | " + " | ".join(f"{path[n][part]:.0f}" for n in runs) + " |")
    print("| thread hand-off (loop -> compute thread -> loop, at the server) | "
          + " | ".join(f"{thread_us:.0f}" for _ in runs) + " |")
    print("| process hand-off (a row over a worker's pipes: the game's servers only; "
          "`cadencia node` has none) | " + " | ".join(f"({process_us:.0f})" for _ in runs)
          + " |")
    beyond: dict[str, float] = {}
    for name, (r, _) in runs.items():
        if isinstance(r, dict) and r["tokens_per_s"] > 0:
            beyond[name] = (1000.0 / r["tokens_per_s"] - compute_ms) / stages * 1000
    print("| the rest: wire (aiortc SCTP + DTLS), event loops, scheduling | " + " | ".join(
        f"{beyond[n] - sum(path[n].values()) - thread_us:.0f}" if n in beyond else "-"
        for n in runs) + " |")
    print("| **a hop beyond compute**: (ms a token - local compute) / stages | " + " | ".join(
        f"**{beyond[n]:.0f}**" if n in beyond else "failed" for n in runs) + " |")
    tick = 1000 / os.sysconf("SC_CLK_TCK")
    print("\nCPU a token (ms; the sentinel, then each stage's node; /proc counts "
          f"{tick:.0f} ms ticks): " + "; ".join(
              f"{n} " + ", ".join(f"{v:.1f}" for v in ms) for n, ms in cpu_ms.items()) + ".")
    print(f"Parts: each measured alone on a real request and reply (one SmolLM2 row), "
          f"median of 300; local compute {compute_ms:.1f} ms a token (`cadencia generate "
          f"--threads 1`). The hive's own processes, timed by `CADENCIA_HOP_TIMING` while "
          f"making those tokens (every call in every process: the hops, and the pings and DHT "
          f"upkeep beside them), a token; a difference of two asks, so the times are within "
          f"their noise (calls are exact):\n")
    print("| part | " + " | ".join(f"{n}: calls | {n}: ms" for n in runs) + " |")
    print("|---|" + "---|---|" * len(runs))
    for part in PARTS:
        cells = []
        for _, totals in runs.values():
            calls, secs = totals.get(part, (0.0, 0.0))
            cells += [f"{calls:.1f}", f"{1000 * secs:.2f}"] if totals else ["-", "-"]
        print(f"| {part} | " + " | ".join(cells) + " |")
    print()
    hop = beyond.get("not verified")
    return None if hop is None else hop / 1000



"""Measuring the Health Vector (`hive_core.base.health`) of this device.

`measure_health` gathers it: TFLOPS from a short torch matmul benchmark (run once per
process, at start), battery and AC power from psutil (no battery means a desktop on AC),
per-peer RTT as the EWMA that `hive_core.mesh.peers.Link` already keeps, stability as
uptime plus request success rate, free RAM, and the hottest readable temperature sensor.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import psutil

from hive_core.base.health import (
    MAX_PEERS,
    MAX_RTT_MS,
    MAX_TEMPERATURE_C,
    MAX_TFLOPS,
    HealthRecord,
    HealthVector,
    PeerRtt,
)
from hive_core.sched.memory import published_free_mb

# -- measurement ---------------------------------------------------------------------------

_tflops_lock = threading.Lock()
_tflops_cache: float | None = None


def benchmark_tflops(seconds: float = 0.25, size: int = 512) -> float:
    """float32 matmul throughput of this device (TFLOP/s), best of repeated timed runs.

    Uses torch's current thread count, which is what shard servers will compute with.
    """
    import torch  # imported here: the health record must stay usable without torch loaded

    if seconds <= 0 or size < 16:
        raise ValueError("benchmark needs seconds > 0 and size >= 16")
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen)
    b = torch.randn(size, size, generator=gen)
    flops = 2.0 * size**3
    best = math.inf
    with torch.inference_mode():
        torch.mm(a, b)  # warm-up: allocator, kernel selection
        deadline = time.perf_counter() + seconds
        runs = 0
        while runs < 3 or time.perf_counter() < deadline:
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t0)
            runs += 1
    return min(flops / max(best, 1e-9) / 1e12, MAX_TFLOPS)


def measured_tflops(seconds: float = 0.25) -> float:
    """The benchmark result for this process, run once (at start) and then cached.

    It runs on a thread of its own that ends with it. A live thread that once ran torch's
    parallel ops keeps an OpenMP thread team; with two teams on the machine's cores, libgomp
    stops spinning between parallel regions, and the shard's compute thread (the one that
    should drive torch, see `hive_core.exec.client.load_local`) pays a thread wake-up in
    every region: a packed decode step ran at under half its speed on 2 cores.
    """
    global _tflops_cache
    with _tflops_lock:
        if _tflops_cache is None:
            _tflops_cache = _on_own_thread(lambda: benchmark_tflops(seconds))
        return _tflops_cache


def _on_own_thread(fn: Callable[[], float]) -> float:
    """`fn()` on a new thread, joined; its exception is raised here."""
    out: list[float] = []
    err: list[BaseException] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            err.append(e)

    t = threading.Thread(target=run, name="tflops-benchmark")
    t.start()
    t.join()
    if err:
        raise err[0]
    return out[0]


def read_power() -> tuple[float | None, bool]:
    """(battery %, on AC); a machine without a readable battery reports (None, True)."""
    try:
        batt = psutil.sensors_battery()
    except (AttributeError, NotImplementedError, OSError, RuntimeError):
        batt = None
    if batt is None:
        return None, True
    pct = min(100.0, max(0.0, float(batt.percent)))
    plugged = batt.power_plugged
    return pct, bool(plugged) if plugged is not None else False


def read_temperature() -> float | None:
    """The hottest current reading of any sensor psutil can read, else None."""
    reader = getattr(psutil, "sensors_temperatures", None)
    if reader is None:
        return None
    try:
        sensors = reader()
    except (NotImplementedError, OSError, RuntimeError):
        return None
    readings = [
        t.current for entries in sensors.values() for t in entries
        if t.current is not None and math.isfinite(t.current) and -60.0 <= t.current <= MAX_TEMPERATURE_C
    ]
    return max(readings) if readings else None


def peer_rtts(peers: Iterable[Any] | Mapping[bytes, float | None]) -> tuple[PeerRtt, ...]:
    """Per-peer RTTs from `PeerInfo`/`Link` objects (their EWMA) or an id -> ms mapping.

    Peers never answered are left out; above MAX_PEERS only the nearest are kept.
    """
    pairs: list[tuple[bytes, float | None]]
    if isinstance(peers, Mapping):
        pairs = list(peers.items())
    else:
        links: Iterable[Any] = peers
        pairs = [(p.node_id, p.rtt_ms) for p in links]
    best: dict[bytes, float] = {}
    for node_id, rtt in pairs:
        if rtt is None or not math.isfinite(rtt) or rtt < 0:
            continue
        rtt = min(float(rtt), MAX_RTT_MS)
        best[bytes(node_id)] = min(rtt, best.get(bytes(node_id), math.inf))
    ranked = sorted(best.items(), key=lambda kv: (kv[1], kv[0]))[:MAX_PEERS]
    return tuple(PeerRtt(nid, ms) for nid, ms in ranked)


def success_rate_of(peers: Iterable[Any], successes: int = 0, attempts: int = 0) -> float:
    """Answered share over explicit task counts plus the links' pongs/pings; 1.0 with no data."""
    ok, total = successes, attempts
    for p in peers:
        ok += min(getattr(p, "pongs", 0), getattr(p, "pings", 0))
        total += getattr(p, "pings", 0)
    if total <= 0:
        return 1.0
    return min(1.0, max(0.0, ok / total))


def measure_health(
    peers: Iterable[Any] | Mapping[bytes, float | None] = (),
    *,
    uptime_s: float,
    successes: int = 0,
    attempts: int = 0,
    tflops: float | None = None,
    now_ms: int | None = None,
    max_memory_mb: float | None = None,
) -> HealthVector:
    """This device's Health Vector now.

    `peers`: `PeerInfo`s from the node's peer table (RTT EWMA, pings/pongs) or an
    id -> RTT mapping; `successes`/`attempts`: tasks served; `tflops`: override the
    cached start-up benchmark (tests, simulator); `max_memory_mb`: the most memory the node
    gives (`--max-memory`), published as its free RAM where the machine has more.
    """
    if isinstance(peers, Mapping):
        rtts = peer_rtts(peers)
        rate = success_rate_of((), successes, attempts)
    else:
        peer_list = list(peers)
        rtts = peer_rtts(peer_list)
        rate = success_rate_of(peer_list, successes, attempts)
    battery, on_ac = read_power()
    return HealthVector(
        tflops=measured_tflops() if tflops is None else float(tflops),
        battery_pct=battery,
        on_ac=on_ac,
        peers=rtts,
        uptime_s=max(0.0, float(uptime_s)),
        success_rate=rate,
        free_ram_mb=published_free_mb(psutil.virtual_memory().available / 2**20, max_memory_mb),
        temperature_c=read_temperature(),
        measured_at_ms=int(time.time() * 1000) if now_ms is None else int(now_ms),
    )


async def local_health(peers: Iterable[Any], *, uptime_s: float, tflops: float | None = None,
                       max_memory_mb: float | None = None) -> HealthRecord:
    """This device's Health Vector as its DHT summary; the matmul benchmark runs off the loop."""
    vector = await asyncio.to_thread(measure_health, list(peers), uptime_s=uptime_s, tflops=tflops,
                                     max_memory_mb=max_memory_mb)
    return vector.to_health_record()

"""Where a node's published Health Vector and the status view's fitness scores come from.

The Health Vector is `hive_core.sched.health` (measured there); this module turns it into
the DHT's `HealthRecord` without blocking the event loop. Fitness is
`hive_core.sched.fitness.fitness(health, kind)` once that module exists; until then a
plain weighted sum stands in, so `cadencia hive status` always prints a score.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from typing import Any

from hive_core.mesh.dht.records import HealthRecord

TASK_KINDS = ("attention", "mlp", "verification")
# Stand-in weights over normalised features (tflops, free RAM, low RTT, stability, power).
_FALLBACK_WEIGHTS = {
    "attention": (0.45, 0.10, 0.25, 0.15, 0.05),
    "mlp": (0.50, 0.20, 0.10, 0.15, 0.05),
    "verification": (0.20, 0.10, 0.10, 0.50, 0.10),
}


async def local_health(peers: Iterable[Any], *, uptime_s: float,
                       tflops: float | None = None) -> HealthRecord:
    """This device's Health Vector as a DHT record; the matmul benchmark runs off the loop."""
    peer_list = list(peers)
    try:
        from hive_core.sched.health import measure_health
    except ImportError:  # the scheduler package is optional for a relay-only install
        return await asyncio.to_thread(_minimal_health, peer_list, uptime_s, tflops)
    vector = await asyncio.to_thread(measure_health, peer_list, uptime_s=uptime_s, tflops=tflops)
    record: HealthRecord = vector.to_health_record()
    return record


def _minimal_health(peers: list[Any], uptime_s: float, tflops: float | None) -> HealthRecord:
    """A Health Vector from psutil and a numpy matmul, used without `hive_core.sched`."""
    import statistics
    import time

    import numpy as np
    import psutil

    if tflops is None:
        a = np.ones((256, 256), dtype=np.float32)
        t0 = time.perf_counter()
        for _ in range(8):
            a @ a
        tflops = 8 * 2 * 256**3 / max(time.perf_counter() - t0, 1e-9) / 1e12
    rtts = [p.rtt_ms for p in peers if p.rtt_ms is not None]
    pings = sum(p.pings for p in peers)
    battery = psutil.sensors_battery() if hasattr(psutil, "sensors_battery") else None
    return HealthRecord(
        tflops=float(tflops), battery_pct=None if battery is None else float(battery.percent),
        on_ac=True if battery is None else bool(battery.power_plugged),
        rtt_median_ms=statistics.median(rtts) if rtts else None, uptime_s=max(0.0, uptime_s),
        success_rate=min(1.0, sum(p.pongs for p in peers) / pings) if pings else 1.0,
        free_ram_mb=psutil.virtual_memory().available / 2**20, temperature_c=None,
        measured_at_ms=int(time.time() * 1000),
    )


def fitness_scores(health: HealthRecord) -> dict[str, float]:
    """Fitness of a node for each task kind, from its published health record."""
    try:
        from hive_core.sched.fitness import fitness
        from hive_core.sched.health import HealthVector
    except ImportError:
        return {kind: round(_fallback(health, kind), 6) for kind in TASK_KINDS}
    vector = HealthVector.from_health_record(health)
    return {kind: round(float(fitness(vector, kind)), 6) for kind in TASK_KINDS}


def _fallback(h: HealthRecord, kind: str) -> float:
    compute = h.tflops / (h.tflops + 0.1)
    ram = min(1.0, h.free_ram_mb / 4096)
    rtt = 1.0 if h.rtt_median_ms is None else 1.0 / (1.0 + h.rtt_median_ms / 50)
    stability = h.success_rate * (1 - math.exp(-h.uptime_s / 600))
    power = 1.0 if h.on_ac else (h.battery_pct or 0.0) / 100
    features = (compute, ram, rtt, stability, power)
    return sum(w * f for w, f in zip(_FALLBACK_WEIGHTS[kind], features, strict=True))

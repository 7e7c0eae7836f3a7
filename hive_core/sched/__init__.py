"""Scheduling: Health Vectors, fitness per task kind, and (planner.py) route planning."""

from hive_core.sched.health import (
    HealthVector,
    PeerRtt,
    benchmark_tflops,
    measure_health,
    measured_tflops,
)

__all__ = [
    "HealthVector",
    "PeerRtt",
    "benchmark_tflops",
    "measure_health",
    "measured_tflops",
]

"""Scheduling: Health Vectors, fitness per task kind, and (planner.py) route planning."""

from hive_core.sched.fitness import (
    FitnessConfig,
    FitnessConfigError,
    TaskKind,
    fitness,
    fitness_all,
    load_fitness_config,
)
from hive_core.sched.health import (
    HealthVector,
    PeerRtt,
    benchmark_tflops,
    measure_health,
    measured_tflops,
)

__all__ = [
    "FitnessConfig",
    "FitnessConfigError",
    "HealthVector",
    "PeerRtt",
    "TaskKind",
    "benchmark_tflops",
    "fitness",
    "fitness_all",
    "load_fitness_config",
    "measure_health",
    "measured_tflops",
]

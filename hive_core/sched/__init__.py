"""Scheduling: Health Vectors, fitness per task kind, and (planner.py) route planning."""

from hive_core.sched.fitness import (
    FitnessConfig,
    FitnessConfigError,
    TaskKind,
    fitness,
    fitness_all,
    load_fitness_config,
)
from hive_core.sched.health import benchmark_tflops, measure_health, measured_tflops
from hive_core.sched.planner import (
    Candidate,
    CostModel,
    Plan,
    PlanError,
    PlannedStage,
    fixed_plan,
    plan,
)

__all__ = [
    "Candidate",
    "CostModel",
    "FitnessConfig",
    "FitnessConfigError",
    "Plan",
    "PlanError",
    "PlannedStage",
    "TaskKind",
    "benchmark_tflops",
    "fitness",
    "fitness_all",
    "fixed_plan",
    "load_fitness_config",
    "measure_health",
    "measured_tflops",
    "plan",
]

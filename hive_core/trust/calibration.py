"""Measured honest per-row differences between kernel families (``python -m bench calibrate``).

Each figure is the largest per-row relative L2 difference seen between honest outputs of
two kernel classes of those families (every pair of classes, thread counts and step
structures the bench runs); `hive_core.trust.kernels.row_tolerance` allows SAFETY times it.
"""

from __future__ import annotations

SAFETY = 8.0  # tolerance = SAFETY x the largest honest difference measured
MEASURED: dict[tuple[str, str], float] = {
    ("f32", "f32"): 2.3e-06,
    ("f32", "int4"): 2.8e-05,
    ("int4", "int4"): 1.5e-05,
    ("bf16", "bf16"): 7.0e-03,
}
# One class, the same inputs computed step by step and as one prefill.
BATCHING: dict[str, float] = {"f32": 1.2e-06, "int4": 1.5e-05, "bf16": 7.0e-03}

"""Replica agreement with a tolerance: floats differ across hardware, lies differ more.

Exact hashes would flag honest nodes whose CPUs round differently, so outputs are
compared by relative L2 distance; a replica is an outlier when it is farther than `rtol`
from the largest group of replicas that agree with each other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_RTOL = 1e-3  # fp32 across CPUs differs ~1e-6; a corrupted stage by far more


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / max(||a||, ||b||); infinity for a shape mismatch or non-finite values."""
    if a.shape != b.shape:
        return float("inf")
    a64, b64 = a.astype(np.float64, copy=False), b.astype(np.float64, copy=False)
    if not (np.isfinite(a64).all() and np.isfinite(b64).all()):
        return float("inf")
    scale = max(float(np.linalg.norm(a64)), float(np.linalg.norm(b64)))
    diff = float(np.linalg.norm(a64 - b64))
    if scale == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return diff / scale


def agree(a: np.ndarray, b: np.ndarray, rtol: float = DEFAULT_RTOL) -> bool:
    return relative_error(a, b) <= rtol


@dataclass(frozen=True)
class Verdict:
    """Who agrees with whom among the replicas of one stage step."""

    agreeing: tuple[bytes, ...]  # the largest agreeing group, in input order
    outliers: tuple[bytes, ...]  # replicas outside the tolerance of that group
    quorum: bool  # the group holds a strict majority and at least two replicas


def judge(outputs: Mapping[bytes, np.ndarray], rtol: float = DEFAULT_RTOL,
          order: Sequence[bytes] | None = None) -> Verdict:
    """Group replicas around each candidate; the biggest group (first on ties) wins."""
    names = list(order) if order is not None else list(outputs)
    best: list[bytes] = []
    for anchor in names:
        group = [n for n in names if agree(outputs[anchor], outputs[n], rtol)]
        if len(group) > len(best):
            best = group
    outliers = tuple(n for n in names if n not in best)
    quorum = len(best) >= 2 and 2 * len(best) > len(names)
    return Verdict(tuple(best), outliers, quorum)

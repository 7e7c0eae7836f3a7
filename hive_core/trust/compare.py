"""Replica agreement per token row: equal bits within a kernel class, a calibrated bound across.

One norm over a whole [tokens, hidden] tensor lets a liar hide in its largest row (SmolLM2's
first row is ~25,000 against ~150 for the others), so every row is compared on its own:
``||a_r - b_r|| / max(||a_r||, ||b_r||)``. Replicas of one kernel class must agree to the
bit; across classes each row must stay within `kernels.row_tolerance` of the other's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from hive_core.trust.kernels import row_tolerance

# Rows are scaled by at least this share of the tensor's largest row norm, so a row an input
# drove to near zero cannot turn rounding noise into a large relative error.
ROW_FLOOR = 1e-3


def row_errors(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row relative L2 distance of two [tokens, hidden] arrays (infinite where a value is
    not finite, or everywhere on a shape mismatch)."""
    if a.shape != b.shape or a.ndim != 2:
        return np.array([np.inf])
    a64, b64 = a.astype(np.float64, copy=False), b.astype(np.float64, copy=False)
    na, nb = np.linalg.norm(a64, axis=1), np.linalg.norm(b64, axis=1)
    scale = np.maximum(np.maximum(na, nb), ROW_FLOOR * max(float(na.max(initial=0.0)),
                                                           float(nb.max(initial=0.0))))
    diff = np.linalg.norm(a64 - b64, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.where(scale > 0, diff / np.where(scale > 0, scale, 1.0),
                       np.where(diff == 0, 0.0, np.inf))
    err[~(np.isfinite(a64).all(axis=1) & np.isfinite(b64).all(axis=1))] = np.inf
    return np.asarray(err)


def agree(a: np.ndarray, b: np.ndarray, tolerance: float) -> bool:
    """Whether two outputs agree: bit for bit with tolerance 0, else row by row within it."""
    if tolerance == 0.0:
        return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()
    return bool((row_errors(a, b) <= tolerance).all())


def agree_classes(a: np.ndarray, kernel_a: str, b: np.ndarray, kernel_b: str) -> bool:
    """`agree` with the tolerance between two kernel classes (TrustError if incomparable)."""
    return agree(a, b, row_tolerance(kernel_a, kernel_b))


@dataclass(frozen=True)
class Verdict:
    """Who agrees with whom among the replicas of one stage step."""

    agreeing: tuple[bytes, ...]  # the largest agreeing group, in input order
    outliers: tuple[bytes, ...]  # replicas that disagree with that group
    quorum: bool  # the group holds a strict majority and at least two replicas


def judge(outputs: Mapping[bytes, np.ndarray], kernels: Mapping[bytes, str],
          order: Sequence[bytes] | None = None) -> Verdict:
    """Group replicas around each candidate; the biggest group (first on ties) wins. A member
    must agree with the anchor under the tolerance of their two kernel classes."""
    names = list(order) if order is not None else list(outputs)
    best: list[bytes] = []
    for anchor in names:
        group = [n for n in names
                 if agree_classes(outputs[anchor], kernels[anchor], outputs[n], kernels[n])]
        if len(group) > len(best):
            best = group
    outliers = tuple(n for n in names if n not in best)
    quorum = len(best) >= 2 and 2 * len(best) > len(names)
    return Verdict(tuple(best), outliers, quorum)

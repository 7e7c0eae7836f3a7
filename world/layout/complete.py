"""Preparing an RTT matrix for MDS: validation, symmetrisation and the measured-pair mask.

Missing pairs are filled from triangle bounds by `hive_core.sim.fill.triangle_fill`
(shared with the simulator's latency model): a first guess that the MDS fit then
replaces by the map's own distances (see `mds.py`).
"""

from __future__ import annotations

import numpy as np

from .errors import LayoutError


def prepare(rtt: np.ndarray) -> np.ndarray:
    """Validate a square RTT matrix (NaN = missing) and return it symmetrised.

    Where both directions are measured their mean is used, else the one measured.
    """
    try:
        arr = np.array(rtt, dtype=float)
    except (TypeError, ValueError) as exc:
        raise LayoutError(f"RTT matrix must hold numbers: {exc}") from None
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise LayoutError(f"RTT matrix must be square, got shape {arr.shape}")
    if np.isinf(arr).any():
        raise LayoutError("RTT matrix holds infinite values (use NaN for missing)")
    if (arr[~np.isnan(arr)] < 0).any():
        raise LayoutError("RTT matrix holds negative values")
    sym = np.where(np.isnan(arr), arr.T, np.where(np.isnan(arr.T), arr, (arr + arr.T) / 2))
    np.fill_diagonal(sym, 0.0)
    return sym


def measured_mask(rtt: np.ndarray) -> np.ndarray:
    """Off-diagonal pairs that hold a measurement."""
    mask = ~np.isnan(rtt)
    np.fill_diagonal(mask, False)
    return mask


"""Height vectors (Vivaldi's model): RTT ~ map distance + h_i + h_j, for the quality figure.

Part of every RTT is the access link (Wi-Fi, DSL, mobile, a country's thin uplink), paid
on every path whatever the direction: no placement in a plane can show it. Vivaldi
(Dabek et al., SIGCOMM 2004) adds a non-negative height per node; its published 11 %
median error is for that model. Here positions and heights are fitted in turns: heights
by least squares on the residuals of the measured pairs (normal equations
(diag(deg) + M) h = rowsum(M o r), negatives clipped: a node cannot sit below the map),
positions by the same SMACOF-EM fit as the map, on the RTTs less both heights.

The map the game draws stays positions-only (`HiveMap`); heights are a better predictor
of long paths but overestimate short ones (two nodes of one town pay both access links
in the model even when their traffic stays local), which the bench reports apart.
Small hives only (`embed` below the landmark threshold): the solve is dense, O(n^3).
"""

from __future__ import annotations

import numpy as np

from .complete import measured_mask
from .errors import LayoutError
from .mds import LANDMARK_THRESHOLD, _pairwise, smacof_em

HEIGHT_ROUNDS = 6


def fit_heights(positions: np.ndarray, rtt: np.ndarray) -> np.ndarray:
    """Non-negative heights that best explain what the map distances leave of the RTTs."""
    mask = measured_mask(rtt)
    m = mask.astype(float)
    residual = np.where(mask, np.nan_to_num(rtt) - _pairwise(positions), 0.0)
    # A node with no measured pair has no equation: the small ridge term sets it to 0.
    a = np.diag(m.sum(1)) + m + 1e-9 * np.eye(m.shape[0])
    return np.clip(np.linalg.solve(a, residual.sum(1)), 0.0, None)


def embed_with_heights(
    rtt: np.ndarray, dim: int, *, rounds: int = HEIGHT_ROUNDS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Positions (n x dim, ms) and heights (n, ms) for a prepared RTT matrix (NaN = missing)."""
    if dim not in (2, 3):
        raise LayoutError(f"dim must be 2 or 3, got {dim}")
    n = rtt.shape[0]
    if n > LANDMARK_THRESHOLD:
        raise LayoutError(
            f"height fits are for hives of at most {LANDMARK_THRESHOLD} nodes, got {n}"
        )
    mask = measured_mask(rtt)
    x = smacof_em(rtt, dim, seed=seed)
    for _ in range(rounds):
        h = fit_heights(x, rtt)
        less = np.where(mask, np.maximum(np.nan_to_num(rtt) - h[:, None] - h[None, :], 0.0), np.nan)
        np.fill_diagonal(less, 0.0)
        x = smacof_em(less, dim, init=x, seed=seed)
    return x, fit_heights(x, rtt)

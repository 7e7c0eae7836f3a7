"""Filling unmeasured RTT pairs from triangle bounds (the simulator's and the map's first guess)."""

from __future__ import annotations

import numpy as np

from hive_core.sim.fill import triangle_fill


def points(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Random points in a 200 ms box: a hive whose RTTs are exactly Euclidean."""
    return np.random.default_rng(seed).uniform(0.0, 200.0, size=(n, dim))


def dists(x: np.ndarray) -> np.ndarray:
    """Exact Euclidean RTT matrix (symmetric, zero diagonal) of points."""
    return np.linalg.norm(x[:, None, :] - x[None, :, :], axis=2)


def drop_pairs(rtt: np.ndarray, share: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Hide a random share of the off-diagonal pairs (symmetrically); return matrix, hidden."""
    rng = np.random.default_rng(seed)
    hide = np.triu(rng.random(rtt.shape) < share, 1)
    hide = hide | hide.T
    return np.where(hide, np.nan, rtt), hide


def test_triangle_fill_stays_within_the_triangle_bounds() -> None:
    x = points(40, 2, seed=1)
    full = dists(x)
    seen, hide = drop_pairs(full, 0.4, seed=2)
    filled = triangle_fill(seen)
    assert not np.isnan(filled).any()
    assert np.array_equal(filled, filled.T)
    assert np.array_equal(filled[~hide], full[~hide])  # measured pairs untouched
    i, j = np.nonzero(np.triu(hide, 1))
    for a, b in zip(i, j):
        both = ~np.isnan(seen[a]) & ~np.isnan(seen[b])
        upper = (seen[a, both] + seen[b, both]).min()
        lower = np.abs(seen[a, both] - seen[b, both]).max()
        assert lower - 1e-9 <= filled[a, b] <= upper + 1e-9
    # On a Euclidean plane the midpoint of the bounds is a good guess.
    rel = np.abs(filled[hide] - full[hide]) / full[hide]
    assert np.median(rel) < 0.15


def test_triangle_fill_puts_unrelated_nodes_far_apart() -> None:
    rtt = np.array(
        [[0.0, 10.0, np.nan, np.nan], [10.0, 0.0, np.nan, np.nan],
         [np.nan, np.nan, 0.0, 80.0], [np.nan, np.nan, 80.0, 0.0]]
    )
    filled = triangle_fill(rtt)
    assert filled[0, 2] == filled[1, 3] == 80.0  # no common neighbour: the largest RTT


def test_triangle_fill_leaves_a_complete_matrix_alone_and_honours_via() -> None:
    full = dists(points(12, 2, seed=3))
    assert np.array_equal(triangle_fill(full), full)
    seen, hide = drop_pairs(full, 0.3, seed=4)
    some = triangle_fill(seen, via=np.arange(6))  # bounds through the first six nodes only
    assert not np.isnan(some).any() and np.array_equal(some, some.T)
    assert np.array_equal(some[~hide], full[~hide])

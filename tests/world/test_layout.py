"""The map layout: RTT matrix preparation, MDS fits, Procrustes alignment and HiveMap updates."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from world.layout import (
    HiveMap,
    LayoutError,
    align_to,
    classical_mds,
    embed,
    measured_mask,
    pair_error,
    prepare,
    procrustes_fit,
    rtt_matrix,
)
from world.layout.mds import choose_landmarks


def points(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Random points in a 200 ms box: a hive whose RTTs are exactly Euclidean."""
    return np.random.default_rng(seed).uniform(0.0, 200.0, size=(n, dim))


def dists(x: np.ndarray) -> np.ndarray:
    """Exact Euclidean RTT matrix (symmetric, zero diagonal) of points."""
    d = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=2)
    return d


def drop_pairs(rtt: np.ndarray, share: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Hide a random share of the off-diagonal pairs (symmetrically); return matrix, hidden."""
    rng = np.random.default_rng(seed)
    hide = np.triu(rng.random(rtt.shape) < share, 1)
    hide = hide | hide.T
    return np.where(hide, np.nan, rtt), hide


# --- prepare -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((2, 3)), "must be square"),
        (np.zeros(4), "must be square"),
        (np.array([[0.0, np.inf], [1.0, 0.0]]), "infinite"),
        (np.array([[0.0, -1.0], [-1.0, 0.0]]), "negative"),
        ([["0", "x"], ["1", "0"]], "must hold numbers"),
    ],
)
def test_prepare_rejects_malformed_matrices(bad: object, message: str) -> None:
    with pytest.raises(LayoutError, match=message):
        prepare(bad)  # type: ignore[arg-type]


def test_prepare_symmetrises_and_zeroes_the_diagonal() -> None:
    raw = np.array([[5.0, 10.0, np.nan], [20.0, np.nan, np.nan], [30.0, np.nan, 7.0]])
    out = prepare(raw)
    assert np.array_equal(np.diag(out), [0.0, 0.0, 0.0])
    assert out[0, 1] == out[1, 0] == 15.0  # both directions: their mean
    assert out[0, 2] == out[2, 0] == 30.0  # one direction: that one
    assert np.isnan(out[1, 2]) and np.isnan(out[2, 1])


# --- MDS --------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [2, 3])
def test_classical_mds_recovers_euclidean_distances(dim: int) -> None:
    x = points(30, dim)
    y = classical_mds(dists(x), dim)
    assert np.allclose(dists(y), dists(x), atol=1e-6)


@pytest.mark.parametrize("dim", [2, 3])
def test_embed_complete_euclidean_matrix_is_near_exact(dim: int) -> None:
    x = points(60, dim, seed=3)
    y = embed(dists(x), dim)
    err = pair_error(y, dists(x), measured_mask(dists(x)))
    assert err.stress < 1e-3


@pytest.mark.parametrize("dim", [2, 3])
def test_embed_predicts_pairs_it_never_saw(dim: int) -> None:
    x = points(80, dim, seed=4)
    full = dists(x)
    seen, hide = drop_pairs(full, 0.5, seed=5)
    y = embed(seen, dim)
    assert pair_error(y, full, hide).median_rel_err < 0.03


def test_landmark_path_places_a_large_hive() -> None:
    x = points(500, 3, seed=6)
    full = dists(x)
    seen, hide = drop_pairs(full, 0.5, seed=7)
    y = embed(seen, 3, landmark_threshold=100, n_landmarks=60)
    assert pair_error(y, full, measured_mask(seen)).median_rel_err < 0.03
    assert pair_error(y, full, hide).median_rel_err < 0.03


def test_landmarks_are_distinct_even_with_zero_rtts() -> None:
    rtt = np.zeros((50, 50))  # co-located nodes: every node is as far as any other
    marks = choose_landmarks(rtt, 20)
    assert len(set(marks.tolist())) == 20


def test_embed_refuses_bad_requests() -> None:
    rtt = dists(points(5, 2))
    with pytest.raises(LayoutError, match="dim must be 2 or 3"):
        embed(rtt, 4)
    with pytest.raises(LayoutError, match="init must have shape"):
        embed(rtt, 2, init=np.zeros((4, 2)))


def test_tiny_hives_do_not_crash() -> None:
    assert embed(np.zeros((1, 1)), 3).shape == (1, 3)
    two = embed(np.array([[0.0, 42.0], [42.0, 0.0]]), 3)
    assert np.linalg.norm(two[0] - two[1]) == pytest.approx(42.0)


# --- Procrustes -------------------------------------------------------------------------


def rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def test_procrustes_undoes_rotation_reflection_and_shift() -> None:
    x = points(20, 3, seed=8)
    mirror = np.diag([1.0, -1.0, 1.0])
    moved = x @ rotation(1.1) @ mirror + np.array([500.0, -20.0, 7.0])
    r, t = procrustes_fit(moved, x)
    assert np.allclose(moved @ r + t, x, atol=1e-9)
    assert np.allclose(r @ r.T, np.eye(3), atol=1e-12)  # no scaling: ms stay ms


def test_align_to_carries_new_nodes_with_the_same_transform() -> None:
    x = points(12, 3, seed=9)
    moved = x @ rotation(-0.7) + 100.0
    common = np.arange(10)  # the last two joined since
    aligned = align_to(moved, x[:10], common, common)
    assert np.allclose(aligned, x, atol=1e-9)
    with pytest.raises(LayoutError, match="shapes differ"):
        procrustes_fit(x[:3], x[:4])


# --- HiveMap ----------------------------------------------------------------------------


def names(n: int) -> list[str]:
    return [f"n{i:03d}" for i in range(n)]


def spread(p: np.ndarray) -> float:
    return float(np.linalg.norm(p - p.mean(axis=0), axis=1).mean())


def test_map_stays_put_when_rtts_change_a_little() -> None:
    x = points(60, 3, seed=10)
    full = dists(x)
    seen, _ = drop_pairs(full, 0.4, seed=11)
    hive = HiveMap(3)
    first = hive.update(names(60), seen).positions
    rng = np.random.default_rng(12)
    noise = np.exp(rng.normal(0.0, 0.03, size=seen.shape))
    noisy = seen * np.triu(noise, 1) + (seen * np.triu(noise, 1)).T
    second = hive.update(names(60), noisy).positions
    moved = np.linalg.norm(second - first, axis=1)
    assert np.median(moved) < 0.05 * spread(first)
    assert hive.snapshot is not None and hive.snapshot.positions is second


def test_map_keeps_old_nodes_put_when_nodes_join_and_leave() -> None:
    x = points(41, 3, seed=13)
    full = dists(x)
    seen, _ = drop_pairs(full, 0.3, seed=14)
    ids = names(41)
    hive = HiveMap(3)
    before = hive.update(ids[:40], seen[:40, :40])
    after = hive.update(ids[1:], seen[1:, 1:])  # n000 left, n040 joined
    old = np.array([before.position(i) for i in ids[1:40]])
    new = np.array([after.position(i) for i in ids[1:40]])
    assert np.median(np.linalg.norm(new - old, axis=1)) < 0.05 * spread(old)
    with pytest.raises(LayoutError, match="unknown node"):
        after.position("n000")


def test_unmeasured_nodes_wait_on_a_fixed_ring_outside_the_map() -> None:
    x = points(20, 2, seed=15)
    rtt = np.full((22, 22), np.nan)
    rtt[:20, :20] = dists(x)
    hive = HiveMap(2)
    snap = hive.update(names(22), rtt)
    assert snap.unplaced == ("n020", "n021")
    placed = snap.positions[:20]
    centre = placed.mean(axis=0)
    radius = np.linalg.norm(placed - centre, axis=1).max()
    for nid in snap.unplaced:
        assert np.linalg.norm(np.array(snap.position(nid)) - centre) > radius
    again = hive.update(names(22), rtt)
    assert np.allclose(again.position("n020"), snap.position("n020"), atol=1.0)
    assert not snap.positions.flags.writeable


def test_add_node_places_a_newcomer_without_moving_anyone() -> None:
    x = points(31, 3, seed=16)
    full = dists(x)
    ids = names(31)
    hive = HiveMap(3)
    before = hive.update(ids[:30], full[:30, :30])
    after = hive.add_node(ids[30], {ids[k]: full[30, k] for k in range(0, 30, 3)})
    assert np.array_equal(after.positions[:30], before.positions)
    spot = np.array(after.position(ids[30]))
    map_rtt = np.linalg.norm(before.positions - spot, axis=1)
    assert np.median(np.abs(map_rtt - full[30, :30]) / full[30, :30]) < 0.03


def test_add_node_refuses_bad_requests() -> None:
    hive = HiveMap(3)
    with pytest.raises(LayoutError, match="call update first"):
        hive.add_node("a", {})
    hive.update(names(10), dists(points(10, 3)))
    with pytest.raises(LayoutError, match="already on the map"):
        hive.add_node("n000", {"n001": 1.0})
    with pytest.raises(LayoutError, match="unknown node"):
        hive.add_node("new", {"ghost": 1.0})
    with pytest.raises(LayoutError, match="bad RTT"):
        hive.add_node("new", {"n001": float("nan")})
    with pytest.raises(LayoutError, match="at least 4 placed nodes"):
        hive.add_node("new", {"n001": 5.0, "n002": 6.0})


def test_rtt_matrix_and_update_validate_ids() -> None:
    a, b, c = bytes(20), bytes([1]) * 20, bytes([2]) * 20  # the hive's 20-byte ids
    rtt = rtt_matrix([a, b, c], {(a, b): 10.0, (b, a): 12.0, (b, c): 30.0})
    snap = HiveMap(2).update([a, b, c], rtt)
    assert np.linalg.norm(np.subtract(snap.position(a), snap.position(b))) == pytest.approx(
        11.0, rel=0.05
    )
    assert set(snap.as_dict()) == {a, b, c}
    with pytest.raises(LayoutError, match="unknown node pair"):
        rtt_matrix([a, b], {(a, c): 1.0})
    with pytest.raises(LayoutError, match="unique"):
        HiveMap(2).update([a, a], np.zeros((2, 2)))
    with pytest.raises(LayoutError, match="3 node ids but an RTT matrix of 2"):
        HiveMap(2).update([a, b, c], np.zeros((2, 2)))
    with pytest.raises(LayoutError, match="dim must be 2 or 3"):
        HiveMap(1)


def test_degenerate_hives_give_finite_maps() -> None:
    ids = names(10)
    co_located = HiveMap(3).update(ids, np.zeros((10, 10)))
    assert np.isfinite(co_located.positions).all() and co_located.quality.stress == 0.0
    one_pair = np.full((10, 10), np.nan)
    one_pair[0, 1] = one_pair[1, 0] = 20.0
    snap = HiveMap(3).update(ids, one_pair)  # two placed nodes in a 3D map
    assert np.linalg.norm(np.subtract(snap.position("n000"), snap.position("n001"))) == (
        pytest.approx(20.0)
    )
    assert len(snap.unplaced) == 8
    assert np.isfinite(embed(np.zeros((450, 450)), 3)).all()  # landmark path too


@settings(max_examples=40, deadline=None)
@given(
    st.integers(2, 14),
    st.integers(0, 2**32 - 1),
    st.floats(0.0, 0.9),
    st.floats(0.0, 0.3),
    st.sampled_from([2, 3]),
)
def test_any_valid_matrix_gives_a_finite_map(
    n: int, seed: int, missing: float, zeros: float, dim: int
) -> None:
    rng = np.random.default_rng(seed)
    rtt = rng.lognormal(3.5, 1.0, size=(n, n))  # not a metric at all, as on the internet
    rtt[rng.random((n, n)) < zeros] = 0.0
    rtt[rng.random((n, n)) < missing] = np.nan
    hive = HiveMap(dim)
    for _ in range(2):
        snap = hive.update(names(n), rtt)
        assert snap.positions.shape == (n, dim) and np.isfinite(snap.positions).all()

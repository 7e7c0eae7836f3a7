"""Map quality: stress and median relative error against real RTTs, fitted and held out."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .complete import measured_mask, prepare
from .errors import LayoutError
from .heights import embed_with_heights
from .mds import embed

# Vivaldi's published median relative error (Dabek et al., SIGCOMM 2004), for scale.
VIVALDI_MEDIAN_REL_ERR = 0.11


@dataclass(frozen=True)
class PairError:
    """Error of map distances on a set of node pairs."""

    pairs: int  # how many measured pairs were compared
    stress: float  # Kruskal stress-1: sqrt(sum (map - rtt)^2 / sum rtt^2)
    median_rel_err: float  # median of |map - rtt| / rtt


@dataclass(frozen=True)
class LayoutQuality:
    """How well a map of `n_nodes` in `dim` dimensions predicts measured RTTs."""

    n_nodes: int
    dim: int
    fitted: PairError  # pairs the fit saw
    held_out: PairError | None  # measured pairs hidden from the fit (None: none held out)
    seconds: float  # time of the fit alone


def pair_error(
    positions: np.ndarray, rtt: np.ndarray, mask: np.ndarray, heights: np.ndarray | None = None
) -> PairError:
    """Compare map distances (plus both heights, if given) with `rtt` on the pairs of the
    upper triangle of `mask`."""
    i, j = np.nonzero(np.triu(mask, 1))
    if i.size == 0:
        return PairError(0, float("nan"), float("nan"))
    truth = rtt[i, j]
    dist = np.linalg.norm(positions[i] - positions[j], axis=1)
    if heights is not None:
        dist = dist + heights[i] + heights[j]
    num, den = float(((dist - truth) ** 2).sum()), float((truth**2).sum())
    # All measured RTTs 0 (co-located nodes): perfect if the map agrees, else unbounded.
    stress = float(np.sqrt(num / den)) if den > 0 else (0.0 if num == 0 else float("inf"))
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(dist - truth) / truth
    rel = rel[np.isfinite(rel)]
    return PairError(int(i.size), stress, float(np.median(rel)) if rel.size else float("nan"))


def holdout_mask(rtt: np.ndarray, fraction: float, seed: int = 0, min_keep: int = 4) -> np.ndarray:
    """A random `fraction` of the measured pairs to hide, never leaving a node with fewer
    than `min_keep` measured pairs (it could not be placed from data any more)."""
    if not 0.0 <= fraction < 1.0:
        raise LayoutError(f"hold-out fraction must be in [0, 1), got {fraction}")
    measured = measured_mask(rtt)
    i, j = np.nonzero(np.triu(measured, 1))
    rng = np.random.default_rng(seed)
    order = rng.permutation(i.size)[: round(fraction * i.size)]
    keep = measured.sum(1)
    hide = np.zeros_like(measured)
    for k in order:
        a, b = i[k], j[k]
        if keep[a] > min_keep and keep[b] > min_keep:
            hide[a, b] = hide[b, a] = True
            keep[a] -= 1
            keep[b] -= 1
    return hide


def evaluate(
    rtt: np.ndarray,
    dim: int = 3,
    *,
    holdout: float = 0.1,
    seed: int = 0,
    heights: bool = False,
    **embed_kw: object,
) -> LayoutQuality:
    """Fit a map without a random `holdout` share of the measured pairs and score it
    on the pairs it saw and on those it did not. `heights`: score Vivaldi's model (map
    distance + height vectors, see `heights.py`) instead of the map distance alone."""
    full = prepare(rtt)
    hide = holdout_mask(full, holdout, seed) if holdout else np.zeros(full.shape, dtype=bool)
    seen = np.where(hide, np.nan, full)
    start = time.perf_counter()
    h: np.ndarray | None = None
    if heights:
        positions, h = embed_with_heights(seen, dim, seed=seed)
    else:
        positions = embed(seen, dim, seed=seed, **embed_kw)  # type: ignore[arg-type]
    seconds = time.perf_counter() - start
    return LayoutQuality(
        n_nodes=full.shape[0],
        dim=dim,
        fitted=pair_error(positions, full, measured_mask(seen), h),
        held_out=pair_error(positions, full, hide, h) if hide.any() else None,
        seconds=seconds,
    )

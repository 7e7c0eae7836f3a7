"""Procrustes alignment: turn a new map onto the previous one so the city does not jump."""

from __future__ import annotations

import numpy as np

from .errors import LayoutError


def procrustes_fit(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation (or reflection) r and shift t minimising ||source @ r + t - target||.

    No scaling: map units are milliseconds, and an MDS map's scale is already the RTTs'.
    Reflections are allowed because MDS cannot tell a map from its mirror image.
    """
    if source.shape != target.shape or source.ndim != 2:
        raise LayoutError(f"shapes differ: {source.shape} vs {target.shape}")
    mu_s, mu_t = source.mean(axis=0), target.mean(axis=0)
    if source.shape[0] < 2:
        return np.eye(source.shape[1]), mu_t - mu_s
    u, _, vt = np.linalg.svd((source - mu_s).T @ (target - mu_t))
    r = u @ vt
    return r, mu_t - mu_s @ r


def align_to(
    new: np.ndarray, previous: np.ndarray, common_new: np.ndarray, common_prev: np.ndarray
) -> np.ndarray:
    """Move the whole new map so that its rows `common_new` best match `previous[common_prev]`.

    Nodes that joined since are carried by the same transform, so they land where the
    fit put them relative to the nodes everyone already sees.
    """
    if len(common_new) == 0:
        return new
    r, t = procrustes_fit(new[common_new], previous[common_prev])
    return new @ r + t

"""The hive's map: node positions from measured RTTs, kept steady from one update to the next."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np

from .align import align_to
from .complete import measured_mask, prepare
from .errors import LayoutError
from .mds import LANDMARK_THRESHOLD, N_LANDMARKS, embed, refine, triangulate
from .quality import PairError, pair_error

# Node ids as the hive has them (20-byte ids) or as text (hex, names in tests and tools).
NodeKey: TypeAlias = str | bytes


@dataclass(frozen=True)
class MapSnapshot:
    """Where every node is, in milliseconds: close on the map means a fast link."""

    node_ids: tuple[NodeKey, ...]
    positions: np.ndarray  # n x dim, read-only
    quality: PairError  # how well map distances match the measured RTTs
    unplaced: tuple[NodeKey, ...]  # nodes without any measurement yet: parked on an outer ring

    def position(self, node_id: NodeKey) -> tuple[float, ...]:
        try:
            row = self.node_ids.index(node_id)
        except ValueError:
            raise LayoutError(f"unknown node {node_id!r}") from None
        return tuple(float(v) for v in self.positions[row])

    def as_dict(self) -> dict[NodeKey, tuple[float, ...]]:
        return {nid: tuple(float(v) for v in row) for nid, row in zip(self.node_ids, self.positions)}


def rtt_matrix(
    node_ids: Sequence[NodeKey],
    measurements: Mapping[tuple[str, str], float] | Mapping[tuple[bytes, bytes], float],
) -> np.ndarray:
    """Square matrix (NaN = not measured) from RTTs keyed by node-id pairs, in ms.

    Both directions may be given; `prepare` averages them. Pairs naming unknown nodes
    are refused, so a typo does not silently drop a measurement.
    """
    index = {nid: i for i, nid in enumerate(node_ids)}
    out = np.full((len(node_ids), len(node_ids)), np.nan)
    for (a, b), value in measurements.items():
        if a not in index or b not in index:
            raise LayoutError(f"measurement for unknown node pair ({a!r}, {b!r})")
        out[index[a], index[b]] = value
    return out


class HiveMap:
    """Keeps the latest map; each update is warm-started from it and aligned onto it.

    Nodes present before and after an update move only as much as their RTTs changed:
    the fit starts from their old positions, then the whole new map is rotated and
    shifted (Procrustes, no scaling) onto the old positions of the nodes both share.

    An update is CPU work (under a second to a few seconds at 2,000 nodes): call it off the
    event loop (`asyncio.to_thread`); `add_node` is cheap enough for the loop itself.
    """

    def __init__(
        self,
        dim: int = 3,
        *,
        seed: int = 0,
        landmark_threshold: int = LANDMARK_THRESHOLD,
        n_landmarks: int = N_LANDMARKS,
    ):
        if dim not in (2, 3):
            raise LayoutError(f"dim must be 2 or 3, got {dim}")
        self.dim = dim
        self._seed = seed
        self._landmark_threshold = landmark_threshold
        self._n_landmarks = n_landmarks
        self._snapshot: MapSnapshot | None = None

    @property
    def snapshot(self) -> MapSnapshot | None:
        return self._snapshot

    def update(self, node_ids: Sequence[NodeKey], rtt: np.ndarray) -> MapSnapshot:
        """Recompute the map for these nodes and their RTT matrix (NaN = not measured)."""
        ids = tuple(node_ids)
        if len(set(ids)) != len(ids):
            raise LayoutError("node ids must be unique")
        full = prepare(rtt)
        if full.shape[0] != len(ids):
            raise LayoutError(f"{len(ids)} node ids but an RTT matrix of {full.shape[0]}")
        placed = measured_mask(full).any(axis=1)
        rows = np.flatnonzero(placed)
        sub = full[np.ix_(rows, rows)]
        prev = self._snapshot
        prev_row = {nid: i for i, nid in enumerate(prev.node_ids)} if prev else {}
        prev_placed = set(prev.node_ids) - set(prev.unplaced) if prev else set()
        init = np.full((rows.size, self.dim), np.nan)
        common_new, common_prev = [], []
        for k, r in enumerate(rows):
            if ids[r] in prev_placed:
                assert prev is not None
                init[k] = prev.positions[prev_row[ids[r]]]
                common_new.append(k)
                common_prev.append(prev_row[ids[r]])
        x = np.zeros((rows.size, self.dim))
        if rows.size:
            x = embed(
                sub,
                self.dim,
                init=init if common_new else None,
                landmark_threshold=self._landmark_threshold,
                n_landmarks=self._n_landmarks,
                seed=self._seed,
            )
        if prev is not None and common_new:
            x = align_to(x, prev.positions, np.array(common_new), np.array(common_prev))
        positions = np.zeros((len(ids), self.dim))
        positions[rows] = x
        unplaced = tuple(ids[i] for i in np.flatnonzero(~placed))
        if unplaced:
            positions[~placed] = _parking_ring(x, unplaced, self.dim)
        positions.setflags(write=False)
        snap = MapSnapshot(ids, positions, pair_error(x, sub, measured_mask(sub)), unplaced)
        self._snapshot = snap
        return snap

    def add_node(
        self, node_id: NodeKey, rtts: Mapping[str, float] | Mapping[bytes, float]
    ) -> MapSnapshot:
        """Place one joining node from its RTTs to nodes on the map; nobody else moves.

        The incremental step for large hives: the newcomer is triangulated from the nodes
        it measured and refined against those pairs alone, O(k) for k measurements instead
        of a refit. Call `update` now and then to let the whole map settle again; the
        snapshot's `quality` stays that of the last full fit.
        """
        prev = self._snapshot
        if prev is None:
            raise LayoutError("add_node needs a map: call update first")
        if node_id in prev.node_ids:
            raise LayoutError(f"node {node_id!r} is already on the map")
        index = {nid: i for i, nid in enumerate(prev.node_ids)}
        parked = set(prev.unplaced)
        rows, values = [], []
        for nid, value in rtts.items():
            if nid not in index:
                raise LayoutError(f"measurement to unknown node {nid!r}")
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise LayoutError(f"bad RTT {value!r} to node {nid!r}")
            if nid not in parked:
                rows.append(index[nid])
                values.append(float(value))
        if len(rows) < self.dim + 1:
            raise LayoutError(
                f"placing a node in {self.dim}D needs RTTs to at least {self.dim + 1} "
                f"placed nodes, got {len(rows)}"
            )
        anchors = prev.positions[rows]
        first = triangulate(anchors, np.array([values]))
        local = np.full((len(rows) + 1, len(rows) + 1), np.nan)
        local[-1, :-1] = local[:-1, -1] = values
        free = np.zeros(len(rows) + 1, dtype=bool)
        free[-1] = True
        spot = refine(np.vstack([anchors, first]), local, free)[-1]
        positions = np.vstack([prev.positions, spot[None, :]])
        positions.setflags(write=False)
        snap = MapSnapshot((*prev.node_ids, node_id), positions, prev.quality, prev.unplaced)
        self._snapshot = snap
        return snap


def _parking_ring(placed: np.ndarray, ids: tuple[NodeKey, ...], dim: int) -> np.ndarray:
    """Nodes with no RTT yet wait on a ring outside the map, each at an angle fixed by
    its id, so they do not jump while they wait."""
    centre = placed.mean(axis=0) if placed.size else np.zeros(dim)
    spread = np.linalg.norm(placed - centre, axis=1).max() if placed.size else 0.0
    radius = 1.25 * spread + 50.0
    out = np.zeros((len(ids), dim))
    for k, nid in enumerate(ids):
        raw = nid.encode() if isinstance(nid, str) else nid
        angle = int.from_bytes(hashlib.blake2b(raw, digest_size=4).digest()) / 2**32
        out[k, 0] = centre[0] + radius * math.cos(2 * math.pi * angle)
        out[k, 1] = centre[1] + radius * math.sin(2 * math.pi * angle)
        if dim == 3:
            out[k, 2] = centre[2]
    return out

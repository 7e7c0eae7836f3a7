"""Latency models for the simulator: simulated nodes placed in countries of real RIPE Atlas data.

`internet_latency(n)` reads `../shared/data/internet-rtt/` through
`world.layout.rtt_data` (the same loader the map uses), fills the unmeasured country
pairs (about half) with the midpoint of their triangle bounds (`world.layout.complete`),
places each node in a country drawn uniformly, and uses the access-latency model of
`world.layout.synth`: rtt(i, j) = (core(c_i, c_j) + a_i + a_j) * exp(N(0, 0.05)), with a
log-normal last mile a_i (median 4 ms). Within a country, core is the country's own
measured RTT capped at its fastest link abroad.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np


class SimError(ValueError):
    """A simulation was asked for with impossible parameters or without its data."""


@dataclass(frozen=True)
class LatencyModel:
    """Round trips between simulated nodes, in milliseconds."""

    countries: tuple[str, ...]  # where node i sits (ISO code, or "lab" for synthetic models)
    rtt_ms: np.ndarray  # n x n, symmetric, zero diagonal, every pair filled
    source: str  # how the matrix was made, for reports

    @property
    def size(self) -> int:
        return len(self.countries)

    def one_way_s(self, i: int, j: int) -> float:
        """Half the round trip between nodes i and j, in seconds."""
        return float(self.rtt_ms[i, j]) / 2000.0


def constant_latency(n: int, rtt_ms: float) -> LatencyModel:
    """Every pair at the same RTT (tests, and the 20 ms bench link)."""
    if n < 1 or not math.isfinite(rtt_ms) or rtt_ms < 0:
        raise SimError(f"need n >= 1 and a finite RTT >= 0, got n={n}, rtt={rtt_ms}")
    rtt = np.full((n, n), float(rtt_ms))
    np.fill_diagonal(rtt, 0.0)
    return LatencyModel(("lab",) * n, rtt, f"constant {rtt_ms:g} ms")


def internet_latency(
    n: int, seed: int = 0, data_dir: str | os.PathLike[str] | None = None
) -> LatencyModel:
    """`n` nodes in countries, RTTs from the RIPE Atlas country matrix (see module doc)."""
    if n < 1:
        raise SimError(f"need at least one node, got {n}")
    # world.layout pulls scikit-learn in; load it only when a real latency model is asked for
    from world.layout.complete import triangle_fill
    from world.layout.rtt_data import load_country_rtt
    from world.layout.synth import ACCESS_MEDIAN_MS, ACCESS_SIGMA, PAIR_NOISE_SIGMA

    try:
        data = load_country_rtt(data_dir)
    except FileNotFoundError as exc:
        raise SimError(str(exc)) from exc
    k = len(data.countries)
    core = triangle_fill(data.rtt)
    abroad = np.where(np.eye(k, dtype=bool), np.inf, core).min(axis=1)
    np.fill_diagonal(core, np.where(np.isnan(data.intra), abroad, np.fmin(data.intra, abroad)))
    rng = np.random.default_rng(seed)
    where = rng.integers(0, k, size=n)
    access = ACCESS_MEDIAN_MS * np.exp(rng.normal(0.0, ACCESS_SIGMA, size=n))
    noise = np.triu(np.exp(rng.normal(0.0, PAIR_NOISE_SIGMA, size=(n, n))), 1)
    noise = noise + noise.T
    rtt = (core[np.ix_(where, where)] + access[:, None] + access[None, :]) * noise
    np.fill_diagonal(rtt, 0.0)
    measured = int(data.measured.sum() // 2)
    total = k * (k - 1) // 2
    source = (f"RIPE Atlas country RTTs ({k} countries, {measured}/{total} pairs measured, "
              f"rest triangle-filled) + log-normal access latency")
    return LatencyModel(tuple(data.countries[i] for i in where), rtt, source)

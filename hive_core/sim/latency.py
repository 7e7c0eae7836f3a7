"""Latency models for the simulator: simulated nodes placed in countries of real RIPE Atlas data.

`internet_latency(n)` reads the RIPE Atlas country matrix shipped in this package
(`rtt_data`; the same data the map's synthetic hives use), fills the unmeasured country
pairs (about half) with the midpoint of their triangle bounds (`fill`), places each node
in a country drawn uniformly, and applies the access-latency model (`access_rtt`):
rtt(i, j) = (core(c_i, c_j) + a_i + a_j) * exp(N(0, 0.05)), with a log-normal last mile
a_i (median 4 ms). Within a country, core is the country's own measured RTT capped at
its fastest link abroad.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from hive_core.sim.errors import SimError
from hive_core.sim.fill import triangle_fill
from hive_core.sim.rtt_data import load_country_rtt

# The last mile: log-normal access latency per node, median 4 ms, sigma 0.7, so a few
# nodes sit on 15-30 ms mobile or rural links; and a per-pair measurement noise.
ACCESS_MEDIAN_MS = 4.0
ACCESS_SIGMA = 0.7
PAIR_NOISE_SIGMA = 0.05


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
    data = load_country_rtt(data_dir)  # RttDataError (a SimError) if missing or malformed
    k = len(data.countries)
    core = triangle_fill(data.rtt)
    abroad = np.where(np.eye(k, dtype=bool), np.inf, core).min(axis=1)
    np.fill_diagonal(core, np.where(np.isnan(data.intra), abroad, np.fmin(data.intra, abroad)))
    rng = np.random.default_rng(seed)
    where = rng.integers(0, k, size=n)
    rtt = access_rtt(core, where, rng)
    measured = int(data.measured.sum() // 2)
    total = k * (k - 1) // 2
    source = (f"RIPE Atlas country RTTs ({k} countries, {measured}/{total} pairs measured, "
              f"rest triangle-filled) + log-normal access latency")
    return LatencyModel(tuple(data.countries[i] for i in where), rtt, source)


def access_rtt(core: np.ndarray, where: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """RTTs of nodes placed in countries `where` of a country matrix `core` (NaN stays NaN).

    rtt(i, j) = (core(c_i, c_j) + a_i + a_j) * exp(N(0, PAIR_NOISE_SIGMA)), with a_i the
    node's log-normal access latency; symmetric, zero diagonal. Draws the access latencies
    and then the noise from `rng`, so a seed gives one hive.
    """
    n = len(where)
    access = ACCESS_MEDIAN_MS * np.exp(rng.normal(0.0, ACCESS_SIGMA, size=n))
    noise = np.triu(np.exp(rng.normal(0.0, PAIR_NOISE_SIGMA, size=(n, n))), 1)
    noise = noise + noise.T
    rtt = (core[np.ix_(where, where)] + access[:, None] + access[None, :]) * noise
    # a_i + a_j and a_j + a_i can differ in the last bit: mirror the upper triangle.
    upper = np.triu(np.ones((n, n), dtype=bool), 1)
    rtt = np.where(upper, rtt, rtt.T)
    np.fill_diagonal(rtt, 0.0)
    return rtt

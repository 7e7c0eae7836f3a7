"""Synthetic hives on real latencies: nodes placed in countries of the RIPE Atlas data set.

The model, for a hive of n nodes:
- n <= number of countries: n distinct countries drawn at random, one node each, and
  their measured country-to-country RTTs as they are (unmeasured pairs stay missing).
  This is the real data, with its triangle-inequality violations.
- n > number of countries: every country gets one node, the rest are drawn uniformly
  among countries. Node i gets an access latency a_i (last mile: log-normal, median
  4 ms, sigma 0.7, so a few nodes sit on 15-30 ms mobile or rural links), and
  rtt(i, j) = core(c_i, c_j) + a_i + a_j, times a per-pair measurement noise
  exp(N(0, 0.05)). core is the country RTT; within one country it is the country's own
  measured RTT, capped at its fastest link abroad (the raw intra-country mean is
  dominated by a few far-off probes). A pair is measured when its country pair is, so
  about the data set's share of pairs is known, and only those are given to the map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hive_core.sim.latency import access_rtt
from hive_core.sim.rtt_data import CountryRtt

from .errors import LayoutError


@dataclass(frozen=True)
class SyntheticHive:
    """Node countries and their RTT matrix (NaN: not measured)."""

    countries: tuple[str, ...]
    rtt: np.ndarray


def synthetic_hive(data: CountryRtt, n: int, seed: int = 0) -> SyntheticHive:
    """A hive of `n` nodes on the real country latencies (see the module docstring)."""
    k = len(data.countries)
    if n < 2:
        raise LayoutError(f"a hive needs at least 2 nodes, got {n}")
    rng = np.random.default_rng(seed)
    if n <= k:
        pick = np.sort(rng.choice(k, size=n, replace=False))
        rtt = data.rtt[np.ix_(pick, pick)].copy()
        return SyntheticHive(tuple(data.countries[i] for i in pick), rtt)
    where = np.concatenate([rng.permutation(k), rng.integers(0, k, size=n - k)])
    core = data.rtt.copy()
    fastest_abroad = np.nanmin(np.where(np.eye(k, dtype=bool), np.nan, data.rtt), axis=1)
    np.fill_diagonal(core, np.fmin(data.intra, fastest_abroad))
    core[np.diag_indices(k)] = np.where(np.isnan(data.intra), np.nan, core.diagonal())
    rtt = access_rtt(core, where, rng)  # the simulator's access-latency model
    return SyntheticHive(tuple(data.countries[i] for i in where), rtt)

"""Benchmark of the hive map: MDS time and map error on real RIPE Atlas RTTs, 50 to 2,000 nodes.

Run: `.venv/bin/python -m bench.bench_layout [--quick]`. Prints markdown tables:

1. Fit quality and time. Each hive hides 10 % of its measured pairs from the fit and is
   scored on the pairs it saw ("fitted") and on those it did not ("held out"): median
   relative error |map - rtt| / rtt and Kruskal stress-1. Vivaldi's published median
   relative error is 11 %, for its model with height vectors; rows "+ heights" score that
   model (map distance + h_i + h_j, `world.layout.heights`), the others the map alone.
2. Map updates: a warm-started, Procrustes-aligned refit after every RTT moved by ~3 %
   (how far nodes move, as a share of the map's mean radius), and `add_node` (one node
   joining a large map, nobody else moving).

What the hives are (see `world.layout.synth`): the data set has 159 countries with at least
one measured pair to another (173 codes in the file, some with only intra-country rows).
Up to 159 nodes, each node is a distinct country and its RTTs are the measured ones. A
hive of 500 or 2,000 nodes puts several nodes in each country; their RTTs are the
country-to-country RTT plus a synthetic access latency per node and 5 % noise, and two
nodes of one country get the country's own (capped) intra RTT plus their access links.
Those same-country pairs are modelled, not measured, so the tables score them apart.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np

from world.layout import (
    HiveMap,
    SyntheticHive,
    embed_with_heights,
    load_country_rtt,
    prepare,
    synthetic_hive,
)
from world.layout.complete import measured_mask
from world.layout.mds import LANDMARK_THRESHOLD, N_LANDMARKS, embed
from world.layout.quality import VIVALDI_MEDIAN_REL_ERR, holdout_mask, pair_error


def pct(x: float) -> str:
    return "n/a" if np.isnan(x) else f"{100 * x:.1f} %"


def fit_row(label: str, rtt: np.ndarray, countries: Sequence[str], dim: int, seed: int,
            landmark_threshold: int = LANDMARK_THRESHOLD, heights: bool = False) -> str:
    full = prepare(rtt)
    hide = holdout_mask(full, 0.1, seed)
    seen = np.where(hide, np.nan, full)
    start = time.perf_counter()
    h = None
    if heights:
        x, h = embed_with_heights(seen, dim, seed=seed)
    else:
        x = embed(seen, dim, seed=seed, landmark_threshold=landmark_threshold)
    seconds = time.perf_counter() - start
    fitted = pair_error(x, full, measured_mask(seen), h)
    held = pair_error(x, full, hide, h)
    c = np.asarray(countries)
    same = c[:, None] == c[None, :]
    held_cross = pair_error(x, full, hide & ~same, h)
    held_same = pair_error(x, full, hide & same, h)
    n = full.shape[0]
    method = "SMACOF-EM" if n <= landmark_threshold else f"landmark ({N_LANDMARKS})"
    method += " + heights" if heights else ""
    return (
        f"| {label} | {n} | {dim}D | {method} | {seconds:.2f} | {fitted.pairs} | "
        f"{pct(fitted.median_rel_err)} | {fitted.stress:.3f} | {held.pairs} | "
        f"{pct(held.median_rel_err)} | {held.stress:.3f} | {pct(held_cross.median_rel_err)} | "
        f"{pct(held_same.median_rel_err)} ({held_same.pairs}) |"
    )


def update_row(n: int, rtt: np.ndarray, dim: int, seed: int) -> str:
    ids = [f"n{i}" for i in range(n)]
    hive = HiveMap(dim, seed=seed)
    t0 = time.perf_counter()
    first = hive.update(ids, rtt).positions
    t1 = time.perf_counter()
    rng = np.random.default_rng(seed + 1)
    noise = np.triu(np.exp(rng.normal(0.0, 0.03, size=rtt.shape)), 1)
    noise = noise + noise.T + np.eye(n)
    second = hive.update(ids, rtt * noise).positions
    t2 = time.perf_counter()
    radius = float(np.linalg.norm(first - first.mean(axis=0), axis=1).mean())
    moved = np.linalg.norm(second - first, axis=1)
    # A newcomer: a copy of the best-measured node's row (its twin in the same country,
    # the same measurements), 3 % noise.
    twin = int(np.argmax(measured_mask(rtt).sum(1)))
    row = rtt[twin] * np.exp(rng.normal(0.0, 0.03, size=n))
    rtts = {ids[k]: float(row[k]) for k in range(n) if k != twin and not np.isnan(row[k])}
    t3 = time.perf_counter()
    snap = hive.add_node("newcomer", rtts)
    t4 = time.perf_counter()
    assert np.array_equal(snap.positions[:n], second)
    return (
        f"| {n} | {dim}D | {t1 - t0:.2f} | {t2 - t1:.2f} | {pct(np.median(moved) / radius)} | "
        f"{pct(np.percentile(moved, 95) / radius)} | {1000 * (t4 - t3):.1f} |"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_layout", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 and 500 nodes, 3D only")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = load_country_rtt()
    sizes = (50, 500) if args.quick else (50, 500, 2000)
    dims = (3,) if args.quick else (2, 3)
    print(f"RIPE Atlas: {len(data.countries)} countries with measured pairs, "
          f"{100 * data.measured.sum() / (len(data.countries) * (len(data.countries) - 1)):.1f} "
          "% of their pairs measured; "
          f"Vivaldi's published median relative error: {pct(VIVALDI_MEDIAN_REL_ERR)}\n")
    print("## Fit: time and error (10 % of measured pairs held out)\n")
    print("| hive | nodes | dim | method | fit s | fitted pairs | fitted med. rel. err | "
          "fitted stress | held-out pairs | held-out med. rel. err | held-out stress | "
          "held-out cross-country | held-out same-country (pairs) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    hives: dict[int, SyntheticHive] = {}
    for dim in dims:
        print(fit_row("RIPE countries", data.rtt, data.countries, dim, args.seed), flush=True)
        for n in sizes:
            hive = hives.setdefault(n, synthetic_hive(data, n, seed=args.seed))
            print(fit_row("nodes in countries", hive.rtt, hive.countries, dim, args.seed),
                  flush=True)
    for dim in dims:  # Vivaldi's model: map distance + per-node heights (small hives)
        print(fit_row("RIPE countries", data.rtt, data.countries, dim, args.seed,
                      heights=True), flush=True)
        if not args.quick:
            hive = synthetic_hive(data, 300, seed=args.seed)
            print(fit_row("nodes in countries", hive.rtt, hive.countries, dim, args.seed,
                          heights=True), flush=True)
    if not args.quick:
        hive = hives[500]
        print(fit_row("same, no landmarks", hive.rtt, hive.countries, 3, args.seed,
                      landmark_threshold=10**6), flush=True)
    print("\nSame-country pairs are modelled, not measured: the country's own RTT (capped at "
          "its fastest link abroad) plus both nodes' synthetic access links (log-normal, "
          "median 4 ms). Nodes of one country see the rest of the world alike, so the map "
          "puts them close together and their 10-30 ms is mostly access latency that no "
          "position can show: hence the large relative error on those few pairs. Height "
          "vectors model access links, but over-predict short pairs (both heights are paid "
          "even when traffic stays local).")
    print("\n## Updates: warm-started refit after RTTs moved ~3 %, and one node joining\n")
    print("| nodes | dim | first fit s | refit s | median move (of map radius) | "
          "p95 move | add_node ms |")
    print("|---|---|---|---|---|---|---|")
    for n in sizes:
        print(update_row(n, hives[n].rtt, 3, args.seed), flush=True)
    print("\nTimings measured on a shared machine: noisy, compare rows of one run only.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Latency models: nodes placed in RIPE Atlas countries, every pair filled, symmetric."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from hive_core.sim.errors import RttDataError, SimError
from hive_core.sim.latency import access_rtt, constant_latency, internet_latency
from hive_core.sim.rtt_data import load_country_rtt


def test_internet_model_is_complete_symmetric_and_from_the_data() -> None:
    m = internet_latency(300, seed=1)
    data = load_country_rtt()
    assert m.size == 300 and m.rtt_ms.shape == (300, 300)
    assert not np.isnan(m.rtt_ms).any()
    assert np.allclose(m.rtt_ms, m.rtt_ms.T)
    assert (np.diag(m.rtt_ms) == 0).all()
    off = m.rtt_ms[np.triu_indices(300, 1)]
    assert (off > 0).all()
    assert set(m.countries) <= set(data.countries)
    assert len(set(m.countries)) > 80  # spread over the world, not one place
    # a measured country pair: node RTT = (country RTT + two access links) * ~5 % noise
    ci = {c: i for i, c in enumerate(data.countries)}
    checked = 0
    for i in range(300):
        for j in range(i + 1, 300):
            a, b = ci[m.countries[i]], ci[m.countries[j]]
            if a != b and not np.isnan(data.rtt[a, b]):
                assert m.rtt_ms[i, j] > 0.8 * data.rtt[a, b]
                checked += 1
    assert checked > 1000
    # same-country pairs are much closer than the world median
    same = [m.rtt_ms[i, j] for i in range(300) for j in range(i + 1, 300)
            if m.countries[i] == m.countries[j]]
    assert np.median(same) < 0.5 * np.median(off)


def test_internet_model_is_seeded() -> None:
    a, b = internet_latency(50, seed=3), internet_latency(50, seed=3)
    assert a.countries == b.countries and np.array_equal(a.rtt_ms, b.rtt_ms)
    assert internet_latency(50, seed=4).countries != a.countries


def test_constant_model_and_errors() -> None:
    m = constant_latency(4, 20.0)
    assert m.one_way_s(0, 3) == pytest.approx(0.010) and m.one_way_s(2, 2) == 0.0
    with pytest.raises(SimError):
        constant_latency(0, 20.0)
    with pytest.raises(SimError):
        constant_latency(3, float("nan"))
    with pytest.raises(RttDataError, match="not found"):
        internet_latency(5, data_dir="/nonexistent/dir")
    with pytest.raises(SimError, match="at least one node"):
        internet_latency(0)


def test_access_model_adds_two_last_miles_and_keeps_unknown_pairs_unknown() -> None:
    core = np.array([[0.0, 50.0, np.nan], [50.0, 0.0, 80.0], [np.nan, 80.0, 0.0]])
    where = np.array([0, 1, 2, 1])
    rtt = access_rtt(core, where, np.random.default_rng(5))
    assert np.array_equal(rtt, rtt.T, equal_nan=True) and (np.diag(rtt) == 0).all()
    assert np.isnan(rtt[0, 2]) and not np.isnan(rtt[0, 1])
    # two nodes in one country: only their access links (median 4 ms each) and noise
    assert 0.0 < rtt[1, 3] < 100.0
    assert rtt[0, 1] > 50.0 * 0.8
    again = access_rtt(core, where, np.random.default_rng(5))
    assert np.array_equal(rtt, again, equal_nan=True)  # one seed, one hive


def test_the_simulator_imports_neither_the_game_nor_the_cli() -> None:
    """hive_core sits below world and cadencia: the latency model and its data are its own."""
    code = ("import sys, hive_core.sim, hive_core.sim.rtt_data; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('world', 'cadencia')); "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr

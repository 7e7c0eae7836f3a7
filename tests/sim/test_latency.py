"""Latency models: nodes placed in RIPE Atlas countries, every pair filled, symmetric."""

from __future__ import annotations

import numpy as np
import pytest

from hive_core.sim.latency import SimError, constant_latency, internet_latency
from world.layout.rtt_data import default_data_dir, load_country_rtt

pytestmark = pytest.mark.skipif(not default_data_dir().exists(),
                                reason="../shared/data/internet-rtt is not present")


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
    with pytest.raises(SimError, match="not found"):
        internet_latency(5, data_dir="/nonexistent/dir")

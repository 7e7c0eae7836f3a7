"""The reward formula: complexity x uptime x efficiency, monotone and integer-exact."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hive_core.base.stage import Part
from hive_core.economy import (
    efficiency_factor,
    efficiency_permille,
    power_permille,
    reward_mc,
    thermal_permille,
)

from .conftest import ident, make_receipt

temps = st.one_of(st.none(), st.integers(-500, 1500))
pcts = st.one_of(st.none(), st.integers(0, 100))


@given(st.integers(-500, 1500), st.integers(-500, 1500), pcts, st.booleans())
def test_efficiency_never_rises_with_heat(t1, t2, pct, on_ac):
    lo, hi = sorted((t1, t2))
    assert efficiency_permille(hi, pct, on_ac) <= efficiency_permille(lo, pct, on_ac)


@given(temps, st.integers(0, 100), st.integers(0, 100))
def test_efficiency_never_falls_with_charge(t, p1, p2):
    lo, hi = sorted((p1, p2))
    assert efficiency_permille(t, lo, False) <= efficiency_permille(t, hi, False)


@given(temps, pcts)
def test_battery_never_pays_more_than_ac(t, pct):
    assert efficiency_permille(t, pct, False) < efficiency_permille(t, pct, True)


@given(temps, pcts, st.booleans())
def test_efficiency_bounds(t, pct, on_ac):
    e = efficiency_permille(t, pct, on_ac)
    assert 120 <= e <= 1000


def test_known_points():
    assert thermal_permille(600) == 1000
    assert thermal_permille(750) == 700
    assert thermal_permille(950) == 300
    assert thermal_permille(1200) == 300
    assert thermal_permille(None) == 850
    assert power_permille(None, True) == 1000
    assert power_permille(0, False) == 400
    assert power_permille(100, False) == 800
    assert efficiency_factor(45.0, None, True) == 1.0
    assert efficiency_factor(75.0, 50, False) == pytest.approx(0.7 * 0.6)
    # hiding the sensor never beats reporting a cool device
    assert efficiency_factor(None, None, True) < efficiency_factor(40.0, None, True)


def test_reward_formula():
    # 30 layers x 100 tokens of full blocks, always up, cool, on AC: 3000 mc = 3 credits
    assert reward_mc(30, 100, Part.FULL, 1000, 500, None, True) == 3000
    # attention is a quarter of a block's weight FLOPs, the MLP three quarters
    assert reward_mc(30, 100, Part.ATTENTION, 1000, 500, None, True) == 750
    assert reward_mc(30, 100, Part.MLP, 1000, 500, None, True) == 2250
    # half uptime halves it; hot and on a half battery cuts it further
    assert reward_mc(30, 100, Part.FULL, 500, 500, None, True) == 1500
    assert reward_mc(30, 100, Part.FULL, 1000, 750, 50, False) == 3000 * 700 * 600 // 10**6


def test_receipt_reward_matches_formula():
    r = make_receipt(ident(1), ident(2), tokens=40, layers=(4, 19), temperature_c=80.0,
                     battery_pct=25, on_ac=False, stability=0.9)
    assert r.reward_mc() == reward_mc(15, 40, Part.FULL, 900, 800, 25, False)
    assert r.reward_mc() > 0


@given(st.integers(1, 64), st.integers(1, 10_000), st.integers(0, 1000), temps, pcts,
       st.booleans())
def test_reward_grows_with_work(layers, tokens, stab, t, pct, on_ac):
    base = reward_mc(layers, tokens, Part.FULL, stab, t, pct, on_ac)
    assert reward_mc(layers + 1, tokens, Part.FULL, stab, t, pct, on_ac) >= base
    assert reward_mc(layers, tokens + 1, Part.FULL, stab, t, pct, on_ac) >= base
    assert reward_mc(layers, tokens, Part.MLP, stab, t, pct, on_ac) <= base

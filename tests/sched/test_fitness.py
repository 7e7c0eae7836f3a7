"""Fitness: w . h per task kind from the shipped TOML, monotone in each feature, overridable."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from pathlib import Path

import pytest

from hive_core.base.health import HealthVector, PeerRtt
from hive_core.sched.fitness import (
    DEFAULT_WEIGHTS,
    FEATURES,
    FitnessConfigError,
    TaskKind,
    default_config,
    features,
    fitness,
    fitness_all,
    load_fitness_config,
    parse_fitness_config,
)


def node(**over: object) -> HealthVector:
    base: dict[str, object] = {
        "tflops": 0.3, "battery_pct": None, "on_ac": True,
        "peers": (PeerRtt(b"\x01" * 20, 30.0),), "uptime_s": 600.0, "success_rate": 0.9,
        "free_ram_mb": 1500.0, "temperature_c": 50.0, "measured_at_ms": 0,
    }
    base.update(over)
    return HealthVector(**base)  # type: ignore[arg-type]


def shipped() -> dict[str, object]:
    return tomllib.loads(DEFAULT_WEIGHTS.read_text())


def test_fitness_is_the_dot_product_of_normalised_weights_and_features() -> None:
    cfg = default_config()
    h = node()
    raw = shipped()["weights"]["mlp"]  # type: ignore[index]
    total = sum(raw.values())
    expected = sum(raw[f] / total * x for f, x in zip(FEATURES, features(h, cfg.scales), strict=True))
    assert fitness(h, "mlp") == pytest.approx(expected)
    assert fitness(h, TaskKind.MLP, cfg) == fitness(h, "MLP")
    assert all(0.0 <= v <= 1.0 for v in fitness_all(h).values())
    assert set(fitness_all(h)) == {"attention", "mlp", "verification"}


def test_features_are_in_unit_range_and_hand_checked() -> None:
    s = default_config().scales
    f = dict(zip(FEATURES, features(node(), s), strict=True))
    assert f["compute"] == pytest.approx(0.3 / (0.3 + s.tflops_ref))
    assert f["latency"] == pytest.approx(s.rtt_ref_ms / (s.rtt_ref_ms + 30.0))
    assert f["power"] == 1.0 and f["thermal"] == 1.0 and f["success"] == 0.9
    hot = dict(zip(FEATURES, features(node(temperature_c=s.temp_hot_c + 1), s), strict=True))
    assert hot["thermal"] == 0.0
    no_rtt = dict(zip(FEATURES, features(node(peers=()), s), strict=True))
    assert no_rtt["latency"] == s.rtt_unknown


@pytest.mark.parametrize("kind", list(TaskKind))
@pytest.mark.parametrize(
    ("worse", "better"),
    [
        ({"tflops": 0.05}, {"tflops": 2.0}),
        ({"peers": (PeerRtt(b"\x01" * 20, 250.0),)}, {"peers": (PeerRtt(b"\x01" * 20, 5.0),)}),
        ({"free_ram_mb": 100.0}, {"free_ram_mb": 8000.0}),
        ({"uptime_s": 10.0}, {"uptime_s": 86400.0}),
        ({"success_rate": 0.3}, {"success_rate": 1.0}),
        ({"battery_pct": 15.0, "on_ac": False}, {"battery_pct": 15.0, "on_ac": True}),
        ({"temperature_c": 90.0}, {"temperature_c": 40.0}),
    ],
)
def test_each_feature_raises_fitness_for_every_kind(
    kind: TaskKind, worse: dict[str, object], better: dict[str, object]
) -> None:
    assert fitness(node(**better), kind) > fitness(node(**worse), kind)


def test_kinds_rank_nodes_differently() -> None:
    cruncher = node(tflops=3.0, uptime_s=60.0, success_rate=0.7)
    steady = node(tflops=0.05, uptime_s=7 * 86400.0, success_rate=1.0)
    assert fitness(cruncher, "mlp") > fitness(steady, "mlp")
    assert fitness(steady, "verification") > fitness(cruncher, "verification")


def test_override_by_path_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = DEFAULT_WEIGHTS.read_text()
    only_compute = "\n".join(
        "compute = 1.0" if line.startswith("compute") else
        (line.split("=")[0] + "= 0.0" if line.split("=")[0].strip() in FEATURES else line)
        for line in text.splitlines()
    )
    path = tmp_path / "w.toml"
    path.write_text(only_compute)
    cfg = load_fitness_config(path)
    h = node()
    assert fitness(h, "attention", cfg) == pytest.approx(h.tflops / (h.tflops + cfg.scales.tflops_ref))
    monkeypatch.setenv("CADENCIA_FITNESS_WEIGHTS", str(path))
    assert fitness(h, "verification") == pytest.approx(fitness(h, "verification", cfg))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("features"), "missing \\[features\\]"),
        (lambda d: d["weights"].pop("mlp"), "weights.mlp\\]: missing"),
        (lambda d: d["weights"]["mlp"].update(speed=1.0), "unknown feature"),
        (lambda d: d["weights"]["attention"].update(compute=-1.0), "outside"),
        (lambda d: d["weights"]["attention"].update(compute="x"), "finite number"),
        (lambda d: d["features"].update(rtt_ref_ms=math.inf), "finite number"),
        (lambda d: d["features"].update(temp_hot_c=10.0), "temp_hot_c must exceed"),
        (lambda d: d["weights"]["verification"].update(dict.fromkeys(FEATURES, 0.0)), "sum to 0"),
    ],
)
def test_bad_configs_are_refused_with_a_clear_error(edit, message: str) -> None:  # type: ignore[no-untyped-def]
    doc = shipped()
    edit(doc)
    with pytest.raises(FitnessConfigError, match=message):
        parse_fitness_config(doc)


def test_unreadable_or_non_toml_file(tmp_path: Path) -> None:
    with pytest.raises(FitnessConfigError, match="cannot read"):
        load_fitness_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[features\n")
    with pytest.raises(FitnessConfigError, match="not valid TOML"):
        load_fitness_config(bad)


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown task kind 'lm_head'"):
        fitness(node(), "lm_head")


def test_health_from_dht_summary_scores_like_the_full_vector() -> None:
    h = node(peers=(PeerRtt(b"\x01" * 20, 10.0), PeerRtt(b"\x02" * 20, 50.0)))
    summary = HealthVector.from_health_record(h.to_health_record())
    for kind in TaskKind:
        assert fitness(summary, kind) == pytest.approx(fitness(h, kind))
    assert dataclasses.replace(summary, peers=h.peers) == h

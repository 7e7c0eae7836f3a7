"""Fitness of a node for a task kind: w . h over normalised Health Vector features.

Features and weights come from a TOML file (`weights.toml` shipped beside this module,
or any path given to `load_fitness_config`, or the `CADENCIA_FITNESS_WEIGHTS` variable).
Each feature maps one aspect of health to [0, 1] (1 = best) with a saturating curve, and
each task kind's weights are rescaled to sum to 1, so a fitness is always in [0, 1].
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, fields
from enum import IntEnum
from functools import lru_cache
from pathlib import Path
from typing import Any

from hive_core.base.health import HealthRecord, HealthVector

DEFAULT_WEIGHTS = Path(__file__).with_name("weights.toml")
ENV_VAR = "CADENCIA_FITNESS_WEIGHTS"
FEATURES = ("compute", "latency", "memory", "uptime", "success", "power", "thermal")


class FitnessConfigError(ValueError):
    """The fitness weights file is missing, not TOML, or has missing/invalid values."""


class TaskKind(IntEnum):
    """What the planner asks a node to do."""

    ATTENTION = 1  # alpha: attention and its KV cache
    MLP = 2  # beta: the feed-forward part
    VERIFICATION = 3  # re-run a stage to check a replica


@dataclass(frozen=True)
class FeatureScales:
    """How raw Health Vector values are normalised to [0, 1]."""

    tflops_ref: float  # TFLOP/s giving compute 0.5
    rtt_ref_ms: float  # median RTT giving latency 0.5
    rtt_unknown: float  # latency feature before any RTT is measured
    uptime_ref_s: float  # uptime giving 0.5
    ram_ref_mb: float  # free RAM giving 0.5
    temp_cool_c: float  # thermal 1 at or below
    temp_hot_c: float  # thermal 0 at or above
    battery_floor: float  # power feature of an empty battery


@dataclass(frozen=True)
class FitnessConfig:
    """Scales plus one normalised weight vector (ordered as FEATURES) per task kind."""

    scales: FeatureScales
    weights: dict[TaskKind, tuple[float, ...]]
    source: str  # file it was loaded from


def features(h: HealthVector, s: FeatureScales) -> tuple[float, ...]:
    """The normalised feature vector of `h`, ordered as FEATURES."""
    rtt = h.rtt_median_ms
    latency = s.rtt_unknown if rtt is None else s.rtt_ref_ms / (s.rtt_ref_ms + rtt)
    power = 1.0 if h.on_ac or h.battery_pct is None else (
        s.battery_floor + (1.0 - s.battery_floor) * h.battery_pct / 100.0
    )
    if h.temperature_c is None or h.temperature_c <= s.temp_cool_c:
        thermal = 1.0
    elif h.temperature_c >= s.temp_hot_c:
        thermal = 0.0
    else:
        thermal = (s.temp_hot_c - h.temperature_c) / (s.temp_hot_c - s.temp_cool_c)
    return (
        h.tflops / (h.tflops + s.tflops_ref),
        latency,
        h.free_ram_mb / (h.free_ram_mb + s.ram_ref_mb),
        h.uptime_s / (h.uptime_s + s.uptime_ref_s),
        h.success_rate,
        power,
        thermal,
    )


def fitness(
    health: HealthVector, kind: TaskKind | str, config: FitnessConfig | None = None
) -> float:
    """w . h for `kind` ("attention", "mlp", "verification" or a TaskKind), in [0, 1]."""
    cfg = config or default_config()
    w = cfg.weights[task_kind(kind)]
    return math.fsum(wi * fi for wi, fi in zip(w, features(health, cfg.scales), strict=True))


def fitness_all(health: HealthVector, config: FitnessConfig | None = None) -> dict[str, float]:
    """Fitness for every task kind, keyed by lower-case name (for status JSON)."""
    return {k.name.lower(): fitness(health, k, config) for k in TaskKind}


def fitness_scores(health: HealthRecord, config: FitnessConfig | None = None) -> dict[str, float]:
    """Fitness for each task kind from a node's published DHT summary (`hive status`)."""
    vector = HealthVector.from_health_record(health)
    return {kind: round(score, 6) for kind, score in fitness_all(vector, config).items()}


def task_kind(kind: TaskKind | str) -> TaskKind:
    if isinstance(kind, TaskKind):
        return kind
    try:
        return TaskKind[str(kind).upper()]
    except KeyError:
        names = ", ".join(k.name.lower() for k in TaskKind)
        raise ValueError(f"unknown task kind {kind!r} (expected one of {names})") from None


def default_config() -> FitnessConfig:
    """The config named by CADENCIA_FITNESS_WEIGHTS, else the shipped weights.toml."""
    return load_fitness_config(os.environ.get(ENV_VAR) or DEFAULT_WEIGHTS)


@lru_cache(maxsize=8)
def _load_cached(path: str, mtime_ns: int) -> FitnessConfig:
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise FitnessConfigError(f"cannot read fitness weights {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise FitnessConfigError(f"fitness weights {path} is not valid TOML: {exc}") from exc
    return parse_fitness_config(doc, source=path)


def load_fitness_config(path: str | os.PathLike[str]) -> FitnessConfig:
    """Load and validate a weights file (cached until the file changes)."""
    p = os.fspath(path)
    try:
        mtime = os.stat(p).st_mtime_ns
    except OSError as exc:
        raise FitnessConfigError(f"cannot read fitness weights {p}: {exc.strerror}") from exc
    return _load_cached(p, mtime)


def _number(table: dict[str, Any], key: str, where: str, lo: float, hi: float) -> float:
    if key not in table:
        raise FitnessConfigError(f"{where}: missing {key!r}")
    v = table[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise FitnessConfigError(f"{where}.{key} must be a finite number, got {v!r}")
    if not lo <= v <= hi:
        raise FitnessConfigError(f"{where}.{key} = {v} is outside [{lo}, {hi}]")
    return float(v)


def parse_fitness_config(doc: dict[str, Any], source: str = "<dict>") -> FitnessConfig:
    """Validate a parsed TOML document; FitnessConfigError names the bad entry."""
    feats = doc.get("features")
    if not isinstance(feats, dict):
        raise FitnessConfigError(f"{source}: missing [features] table")
    names = [f.name for f in fields(FeatureScales)]
    unknown = set(feats) - set(names)
    if unknown:
        raise FitnessConfigError(f"{source}: unknown feature setting(s) {sorted(unknown)}")
    bounds = {"rtt_unknown": (0.0, 1.0), "battery_floor": (0.0, 1.0)}
    vals = {}
    for n in names:
        lo, hi = bounds.get(n, (1e-9, 1e9)) if not n.startswith("temp") else (-60.0, 250.0)
        vals[n] = _number(feats, n, f"{source} [features]", lo, hi)
    scales = FeatureScales(**vals)
    if scales.temp_hot_c <= scales.temp_cool_c:
        raise FitnessConfigError(f"{source}: temp_hot_c must exceed temp_cool_c")
    table = doc.get("weights")
    if not isinstance(table, dict):
        raise FitnessConfigError(f"{source}: missing [weights.*] tables")
    weights: dict[TaskKind, tuple[float, ...]] = {}
    for kind in TaskKind:
        where = f"{source} [weights.{kind.name.lower()}]"
        row = table.get(kind.name.lower())
        if not isinstance(row, dict):
            raise FitnessConfigError(f"{where}: missing")
        extra = set(row) - set(FEATURES)
        if extra:
            raise FitnessConfigError(f"{where}: unknown feature(s) {sorted(extra)}")
        raw = [_number(row, f, where, 0.0, 1e6) for f in FEATURES]
        total = math.fsum(raw)
        if total <= 0:
            raise FitnessConfigError(f"{where}: weights sum to 0")
        weights[kind] = tuple(x / total for x in raw)
    return FitnessConfig(scales=scales, weights=weights, source=source)

"""Colours and sizes as pure functions of model values (tested without a renderer)."""

from __future__ import annotations

import hashlib
import math

import numpy as np


def rtt_color(rtt_ms: float) -> tuple[float, float, float, float]:
    """Green for a fast link (<= 10 ms), through yellow, to red (>= 250 ms); log scale."""
    x = (math.log10(max(rtt_ms, 1.0)) - 1.0) / (math.log10(250.0) - 1.0)
    x = min(max(x, 0.0), 1.0)
    return (min(1.0, 2.0 * x), min(1.0, 2.0 * (1.0 - x)), 0.15, 1.0)


def rtt_colors(rtt_ms: np.ndarray) -> np.ndarray:
    """`rtt_color` over an array: ``[n]`` to ``[n, 4]``."""
    x = (np.log10(np.maximum(rtt_ms, 1.0)) - 1.0) / (math.log10(250.0) - 1.0)
    x = np.clip(x, 0.0, 1.0)
    out = np.empty((len(x), 4), np.float32)
    out[:, 0] = np.minimum(1.0, 2.0 * x)
    out[:, 1] = np.minimum(1.0, 2.0 * (1.0 - x))
    out[:, 2] = 0.15
    out[:, 3] = 1.0
    return out


def owner_color(owner: str) -> tuple[float, float, float]:
    """A stable, saturated colour per player id."""
    h = hashlib.blake2b(owner.encode(), digest_size=2).digest()
    hue = (int.from_bytes(h, "big") % 12) / 12.0  # twelve well-separated hues
    return _hsv(hue, 0.55, 0.9)


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))[i]


def district_light(battery: float, efficiency: float, active: bool) -> float:
    """0..1 glow: full health lights a district; a hot, inefficient device dims."""
    health = min(max(battery, 0.0), 1.0) * min(max(efficiency, 0.0), 1.0)
    return (0.25 + 0.75 * health) * (1.0 if active else 0.45)


# Footprint (x, y) and height per building kind, in cells; unknown kinds are drawn as houses.
KIND_SHAPE = {
    "house": (0.8, 0.6, 0.8), "tower": (0.5, 0.5, 2.2), "workshop": (0.9, 0.7, 0.6),
    "datacenter": (0.9, 0.9, 1.3), "park": (0.9, 0.9, 0.12), "plaza": (0.95, 0.95, 0.05),
    "antenna": (0.18, 0.18, 3.0), "market": (0.85, 0.85, 0.5),
}


def kind_shape(kind: str) -> tuple[float, float, float]:
    return KIND_SHAPE.get(kind, KIND_SHAPE["house"])

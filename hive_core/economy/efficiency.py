"""The reward formula's factors: task complexity, uptime and the device's efficiency factor.

All arithmetic is integer (per-mille), so every peer derives exactly the same credits
from the same receipts whatever its CPU or summation order.
"""

from __future__ import annotations

from hive_core.base.stage import Part

PERMILLE = 1000

# Thermal factor: a device is fully efficient up to COOL_DC, loses 2 per-mille per
# deci-degree above it, and bottoms out at HOT_FLOOR from HOT_DC on. Running hot means
# throttled silicon, fan noise and wear: the hive should prefer cool devices, so it pays
# them more for the same work.
COOL_DC = 600  # 60.0 °C
HOT_DC = 950  # 95.0 °C
HOT_FLOOR = 300
# A device that does not report its temperature is paid as if it ran at 67.5 °C: hiding
# the sensor never pays better than reporting a cool device.
UNKNOWN_THERMAL = 850

# Power factor: on mains power the work costs the owner nothing but electricity; on
# battery it drains a phone or laptop the player is using, so the hive pays less (the
# planner then prefers plugged-in devices), and less still as the battery empties.
ON_AC = 1000
BATTERY_BASE = 400  # at 0 %
BATTERY_PER_PCT = 4  # +4 per-mille per percent: 800 at 100 %
UNKNOWN_BATTERY = BATTERY_BASE


# Share of a llama block's weight FLOPs per part, for SmolLM2-135M (hidden 576, KV 192,
# MLP 1536): attention q,k,v,o = 576*(576+192+192+576) = 0.88 M weights, MLP gate/up/down
# = 3*576*1536 = 2.65 M, i.e. 25 % / 75 %. Other llama shapes are close to this split.
PART_WEIGHT_PERMILLE: dict[Part, int] = {Part.FULL: 1000, Part.ATTENTION: 250, Part.MLP: 750}


def thermal_permille(temperature_dc: int | None) -> int:
    """Per-mille factor for a temperature in deci-degrees Celsius (None: unknown)."""
    if temperature_dc is None:
        return UNKNOWN_THERMAL
    if temperature_dc <= COOL_DC:
        return PERMILLE
    if temperature_dc >= HOT_DC:
        return HOT_FLOOR
    return PERMILLE - 2 * (temperature_dc - COOL_DC)


def power_permille(battery_pct: int | None, on_ac: bool) -> int:
    """Per-mille factor for the power source: 1000 on AC, 400..800 on battery by charge."""
    if on_ac:
        return ON_AC
    if battery_pct is None:
        return UNKNOWN_BATTERY
    return BATTERY_BASE + BATTERY_PER_PCT * battery_pct


def efficiency_permille(temperature_dc: int | None, battery_pct: int | None, on_ac: bool) -> int:
    """The efficiency factor in per-mille: thermal x power, rounded down.

    Monotone: never rises with temperature, never falls with battery charge, and a device
    on AC is never paid less than the same device on battery.
    """
    return thermal_permille(temperature_dc) * power_permille(battery_pct, on_ac) // PERMILLE


def efficiency_factor(
    temperature_c: float | None, battery_pct: float | None, on_ac: bool
) -> float:
    """The efficiency factor in [0.12, 1] from Health Vector fields (float convenience form)."""
    t_dc = None if temperature_c is None else round(temperature_c * 10)
    pct = None if battery_pct is None else max(0, min(100, round(battery_pct)))
    return efficiency_permille(t_dc, pct, on_ac) / PERMILLE


def complexity_layer_tokens_permille(n_layers: int, tokens: int, part: Part) -> int:
    """Task complexity: layers x tokens x the part's FLOP share (per-mille layer-tokens)."""
    return n_layers * tokens * PART_WEIGHT_PERMILLE[part]


def reward_mc(
    n_layers: int,
    tokens: int,
    part: Part,
    stability_permille: int,
    temperature_dc: int | None,
    battery_pct: int | None,
    on_ac: bool,
) -> int:
    """Milli-credits for one task: (complexity x uptime) x efficiency factor.

    One full-block layer-token, done by an always-up, cool, plugged-in device, earns one
    milli-credit; a 100-token answer through SmolLM2's 30 layers is worth 3 credits.
    """
    num = (
        complexity_layer_tokens_permille(n_layers, tokens, part)
        * stability_permille
        * efficiency_permille(temperature_dc, battery_pct, on_ac)
    )
    return num // (PERMILLE**3)

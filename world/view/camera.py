"""The camera as pure state: a target on the ground, a distance, a heading and a pitch.

Play and edit orbit it from the key map (scaled by dt); spectate eases the target onto
the active stage's district so the camera follows the tensor flow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class CameraState:
    """Where the camera looks from."""

    x: float = 0.0  # target on the ground
    y: float = 0.0
    distance: float = 100.0
    heading: float = 20.0  # degrees about z
    pitch: float = 55.0  # degrees down from the horizon

    def eye(self) -> tuple[float, float, float]:
        """The camera position in world space."""
        h, p = math.radians(self.heading), math.radians(self.pitch)
        flat = self.distance * math.cos(p)
        return (self.x + flat * math.sin(h), self.y - flat * math.cos(h), self.distance * math.sin(p))


def framing(xs: list[float] | tuple[float, ...], ys: list[float] | tuple[float, ...], fov_deg: float = 40.0,
            heading: float = 20.0, pitch: float = 55.0) -> CameraState:
    """A camera that fits every point (x, y) in view."""
    if not xs:
        return CameraState(heading=heading, pitch=pitch)
    cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
    radius = max(max(math.hypot(x - cx, y - cy) for x, y in zip(xs, ys)), 1.0)
    distance = radius * 1.15 / math.tan(math.radians(fov_deg) / 2)
    return CameraState(cx, cy, distance, heading, pitch)


def orbit(state: CameraState, intent: dict[str, bool], dt: float) -> CameraState:
    """Apply held keys: a/d turn, w/s pitch, q/e zoom, arrows pan (in the view's frame)."""
    turn = 60.0 * dt * (intent.get("right", False) - intent.get("left", False))
    tilt = 40.0 * dt * (intent.get("up", False) - intent.get("down", False))
    zoom = math.exp(1.2 * dt * (intent.get("zoom_out", False) - intent.get("zoom_in", False)))
    pan_f = state.distance * 0.6 * dt * (intent.get("pan_up", False) - intent.get("pan_down", False))
    pan_r = state.distance * 0.6 * dt * (intent.get("pan_right", False) - intent.get("pan_left", False))
    h = math.radians(state.heading)
    return replace(
        state,
        x=state.x + pan_r * math.cos(h) - pan_f * math.sin(h),
        y=state.y + pan_r * math.sin(h) + pan_f * math.cos(h),
        heading=(state.heading + turn) % 360.0,
        pitch=min(max(state.pitch + tilt, 10.0), 89.0),
        distance=state.distance * zoom,
    )


def track(state: CameraState, x: float, y: float, dt: float, rate: float = 3.0) -> CameraState:
    """Ease the target towards (x, y): a critically damped follow, frame-rate independent."""
    k = 1.0 - math.exp(-rate * dt)
    return replace(state, x=state.x + (x - state.x) * k, y=state.y + (y - state.y) * k)

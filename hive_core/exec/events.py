"""Game events from the inference path: built here, handed to an `on_event(obj)` hook.

The event types live in `world.game.events` (pure dataclasses, no rendering). A bad or
failing hook never breaks inference: its errors are logged and dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

EventHook = Callable[[Any], None]

try:  # the game half may be absent in a headless install
    from world.game import events as game_events
except ImportError:  # pragma: no cover - exercised only without world/
    game_events = None  # type: ignore[assignment]


class Emitter:
    """Builds events by name (``emit("Verified", session_id=..., ...)``) and calls the hook."""

    def __init__(self, hook: EventHook | None) -> None:
        self.hook = hook

    def __call__(self, kind: str, **fields: Any) -> None:
        if self.hook is None or game_events is None:
            return
        if kind != "HopSent":
            fields.setdefault("at", time.monotonic())
        try:
            event = getattr(game_events, kind)(**fields)
        except Exception:  # an event that does not validate is a bug here, not a crash there
            logger.exception("could not build %s event", kind)
            return
        try:
            self.hook(event)
        except Exception:
            logger.exception("event hook failed on %s", kind)

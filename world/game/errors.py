"""Errors of the game mechanics layer."""

from __future__ import annotations


class GameError(ValueError):
    """Base class: a game event or request cannot be applied."""


class GameEventError(GameError):
    """An event is malformed (wrong id length, negative time, bad range) or forged."""

"""Errors of the map layout."""

from __future__ import annotations


class LayoutError(ValueError):
    """An RTT matrix or a map request is malformed (shape, sign, ids, dimensions)."""

"""Errors of the simulator and of its latency data."""

from __future__ import annotations


class SimError(ValueError):
    """A simulation was asked for with impossible parameters or without its data."""


class RttDataError(SimError):
    """The RTT data set is missing, unreadable or malformed (which file, which line)."""

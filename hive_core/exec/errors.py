"""Errors of distributed execution: each a ValueError subclass with one clear message."""

from __future__ import annotations


class ExecError(ValueError):
    """A distributed inference request that cannot be served or completed."""


class FaultSpecError(ExecError):
    """A `--fault` value that is not noise, zero, stale or crash-after=N."""


class NoReplicaError(ExecError):
    """Every node of a stage failed or was slashed and no spare could take over."""


class VerificationError(ExecError):
    """Replicas disagree and no majority (or referee) can settle which answer is right."""

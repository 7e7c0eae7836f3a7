"""Deliberate misbehaviour for testing the hive's defences (`cadencia node --fault`).

A TEST TOOL: a node with a fault answers wrong on purpose (or dies) so that tests and
demos can show verification, slashing and failover at work.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch

from hive_core.exec.errors import FaultSpecError

FAULT_HELP = "noise | zero | stale | crash-after=N"


class FaultKind(enum.Enum):
    """How a faulty shard server misbehaves."""

    NOISE = "noise"  # adds Gaussian noise (10 % of the output's std) to every output
    ZERO = "zero"  # answers all zeros
    STALE = "stale"  # replays its previous answer (or echoes the input) instead of computing
    CRASH = "crash-after"  # serves N requests, then dies without answering


@dataclass(frozen=True)
class Fault:
    """One fault mode; `after` is N for crash-after (0 otherwise)."""

    kind: FaultKind
    after: int = 0

    @classmethod
    def parse(cls, text: str) -> Fault:
        value = text.strip().lower()
        if value.startswith("crash-after"):
            _, sep, n = value.partition("=")
            if not sep or not n.isdigit():
                raise FaultSpecError(f"bad fault {text!r}: expected crash-after=N (N >= 0)")
            return cls(FaultKind.CRASH, int(n))
        try:
            return cls(FaultKind(value))
        except ValueError:
            raise FaultSpecError(f"unknown fault {text!r}: choose {FAULT_HELP}") from None

    def __str__(self) -> str:
        return f"crash-after={self.after}" if self.kind is FaultKind.CRASH else self.kind.value

    def should_crash(self, served: int) -> bool:
        return self.kind is FaultKind.CRASH and served >= self.after

    def corrupt(self, out: torch.Tensor, inp: torch.Tensor, last: torch.Tensor | None,
                gen: torch.Generator) -> torch.Tensor:
        """The wrong answer this fault gives instead of `out`."""
        if self.kind is FaultKind.NOISE:
            scale = float(out.float().std()) * 0.1 or 0.1
            return out + torch.randn(out.shape, generator=gen, dtype=out.dtype) * scale
        if self.kind is FaultKind.ZERO:
            return torch.zeros_like(out)
        if self.kind is FaultKind.STALE:
            return last.clone() if last is not None and last.shape == out.shape else inp.clone()
        return out

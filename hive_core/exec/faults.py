"""Deliberate misbehaviour for testing the hive's defences (`cadencia node --fault`).

A TEST TOOL: a node with a fault answers wrong on purpose (or dies, or goes silent) so that
tests and demos can show verification, slashing, hedging and failover at work.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from hive_core.exec.errors import FaultSpecError

FAULT_HELP = "noise | zero | stale | scale | silent | crash-after=N"
SCALE = 1.002  # the scale fault's factor: a quiet lie, far inside the old whole-tensor tolerance

# (honest output, input) -> the output to send instead: a test's crafted perturbation.
Perturbation = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class FaultKind(enum.Enum):
    """How a faulty shard server misbehaves."""

    NOISE = "noise"  # adds Gaussian noise (10 % of the output's std) to every output
    ZERO = "zero"  # answers all zeros
    STALE = "stale"  # replays its previous answer (or echoes the input) instead of computing
    SCALE = "scale"  # multiplies every output by SCALE
    SILENT = "silent"  # takes every request and never answers (links stay up)
    CRASH = "crash-after"  # serves N requests, then dies without answering
    PERTURB = "perturb"  # applies a test's perturbation (not parseable: tests build it)


@dataclass(frozen=True)
class Fault:
    """One fault mode; `after` is N for crash-after (0 otherwise); `perturb` for PERTURB."""

    kind: FaultKind
    after: int = 0
    perturb: Perturbation | None = field(default=None, compare=False)

    @classmethod
    def parse(cls, text: str) -> Fault:
        value = text.strip().lower()
        if value.startswith("crash-after"):
            _, sep, n = value.partition("=")
            if not sep or not n.isdigit():
                raise FaultSpecError(f"bad fault {text!r}: expected crash-after=N (N >= 0)")
            return cls(FaultKind.CRASH, int(n))
        try:
            kind = FaultKind(value)
        except ValueError:
            kind = None
        if kind is None or kind is FaultKind.PERTURB:
            raise FaultSpecError(f"unknown fault {text[:64]!r}: choose {FAULT_HELP}")
        return cls(kind)

    @classmethod
    def crafted(cls, perturb: Perturbation) -> Fault:
        """A fault that sends `perturb(output, input)` instead of each output."""
        return cls(FaultKind.PERTURB, perturb=perturb)

    def __str__(self) -> str:
        return f"crash-after={self.after}" if self.kind is FaultKind.CRASH else self.kind.value

    def should_crash(self, served: int) -> bool:
        return self.kind is FaultKind.CRASH and served >= self.after

    @property
    def silent(self) -> bool:
        return self.kind is FaultKind.SILENT

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
        if self.kind is FaultKind.SCALE:
            return out * SCALE
        if self.kind is FaultKind.PERTURB and self.perturb is not None:
            return self.perturb(out, inp)
        return out

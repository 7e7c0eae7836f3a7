"""`Stage`: a contiguous range of layers and which part of them (the unit shipped to a node)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class StageError(ValueError):
    """A stage that is malformed or does not fit the model, its caches or its input tensor."""


class Part(enum.IntEnum):
    """Which part of each block a stage runs (the planner's alpha/beta split).

    The integer is the wire value (inference requests, receipts, attestations, feeds); the
    label is the text form (`Stage` strings, JSON, the CLI).
    """

    FULL = 0  # attention then MLP
    ATTENTION = 1  # h + attn(norm(h)); needs the layer's KV cache (alpha nodes)
    MLP = 2  # h + mlp(norm(h)); stateless (beta nodes)

    @property
    def label(self) -> str:
        """"full", "attention" or "mlp"."""
        return self.name.lower()

    @classmethod
    def from_label(cls, text: str) -> Part:
        """Inverse of `label`; ValueError on anything else."""
        try:
            return cls[text.upper()]
        except KeyError:
            raise ValueError(f"unknown part {text!r}: expected full, attention or mlp") from None

    @property
    def has_attention(self) -> bool:
        return self is not Part.MLP

    @property
    def has_mlp(self) -> bool:
        return self is not Part.ATTENTION


@dataclass(frozen=True, slots=True)
class Stage:
    """Layers ``start <= layer < end`` (half-open, like `range`), running `part` of each."""

    start: int
    end: int
    part: Part = Part.FULL

    def __post_init__(self) -> None:
        if not isinstance(self.part, Part):
            raise StageError(f"stage part must be a Part, got {self.part!r}")
        if isinstance(self.start, bool) or isinstance(self.end, bool):
            raise StageError("stage bounds must be integers")
        if not isinstance(self.start, int) or not isinstance(self.end, int):
            raise StageError("stage bounds must be integers")
        if self.start < 0 or self.end <= self.start:
            raise StageError(f"empty or negative layer range {self.start}..{self.end}")

    @property
    def layers(self) -> range:
        return range(self.start, self.end)

    def check(self, n_layers: int) -> None:
        """Raise StageError unless every layer exists in a model of `n_layers`."""
        if self.end > n_layers:
            raise StageError(f"stage {self} reaches past the model's {n_layers} layers")

    def __str__(self) -> str:
        return f"{self.start}:{self.end}:{self.part.label}"

    @classmethod
    def parse(cls, text: str) -> Stage:
        """Inverse of `str()`: ``"10:20"`` or ``"10:20:attention"``."""
        pieces = text.split(":")
        if len(pieces) not in (2, 3):
            raise StageError(f"bad stage {text!r}: expected START:END[:full|attention|mlp]")
        try:
            start, end = int(pieces[0]), int(pieces[1])
            part = Part.from_label(pieces[2]) if len(pieces) == 3 else Part.FULL
        except ValueError as exc:
            raise StageError(f"bad stage {text!r}: expected START:END[:full|attention|mlp]") from exc
        return cls(start, end, part)


def even_stages(n_layers: int, n_stages: int) -> list[Stage]:
    """Split `n_layers` into `n_stages` contiguous full stages, sizes differing by at most one."""
    if n_stages < 1 or n_stages > n_layers:
        raise StageError(f"cannot split {n_layers} layers into {n_stages} stages")
    base, extra = divmod(n_layers, n_stages)
    stages, start = [], 0
    for i in range(n_stages):
        end = start + base + (1 if i < extra else 0)
        stages.append(Stage(start, end))
        start = end
    return stages


def split_parts(stage: Stage) -> list[Stage]:
    """One attention-only and one MLP-only stage per layer, in execution order."""
    out = []
    for layer in stage.layers:
        if stage.part.has_attention:
            out.append(Stage(layer, layer + 1, Part.ATTENTION))
        if stage.part.has_mlp:
            out.append(Stage(layer, layer + 1, Part.MLP))
    return out

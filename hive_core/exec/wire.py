"""Helpers both ends of a hop share: seal contexts, hidden-state bytes, the weights mapping."""

from __future__ import annotations

import struct

import numpy as np
import torch

from hive_core.base.stage import Part, Stage
from hive_core.exec.errors import ExecError
from hive_core.protocol.inference import WeightsKind

_CTX = struct.Struct("<3s16sIHHBI")
WEIGHTS_TO_WIRE = {"fp32": WeightsKind.FP32, "packed": WeightsKind.PACKED, "bf16": WeightsKind.BF16}
WEIGHTS_FROM_WIRE = {v: k for k, v in WEIGHTS_TO_WIRE.items()}


def seal_context(direction: bytes, session_id: bytes, step: int, stage: Stage, position: int) -> bytes:
    """What a sealed payload is bound to: direction (b"in"/b"out"), session, step, stage, position."""
    return _CTX.pack(direction, session_id, step, stage.start, stage.end,
                     int(stage.part), position)


def hidden_bytes(h: torch.Tensor) -> bytes:
    """float32 little-endian bytes of a [tokens, hidden] tensor."""
    return np.ascontiguousarray(h.detach().to(torch.float32).numpy(), dtype="<f4").tobytes()


def hidden_from_bytes(data: bytes, tokens: int, hidden: int) -> np.ndarray:
    """Inverse of `hidden_bytes`, checking the size and that every value is finite."""
    if tokens < 1 or len(data) != tokens * hidden * 4:
        raise ExecError(f"hidden states of {len(data)} bytes do not fit [{tokens}, {hidden}] float32")
    arr = np.frombuffer(data, dtype="<f4").reshape(tokens, hidden)
    if not np.isfinite(arr).all():
        raise ExecError("hidden states contain NaN or infinity")
    return arr


def stage_of(layer_start: int, layer_end: int, part: Part) -> Stage:
    return Stage(layer_start, layer_end, Part(part))

"""Helpers both ends of a hop share: seal contexts, hidden-state bytes in each wire dtype, the
weights mapping.

Hidden states may travel as float32, float16 or bfloat16 (`Dtype.F32/F16/BF16`). A 16-bit
wire rounds each value to nearest even; the receiver widens the bits back to float32
exactly, so what a node hashes, attests and computes on is the float32 image of the bytes
it was sent (a bijection of them): replicas given the same bytes agree to the bit, and the
evidence, audit and replay machinery keeps reading float32 rows. A worker's attested output
is its output as rounded for the wire; the replayer rounds the same way (`split_kv`).
"""

from __future__ import annotations

import struct

import numpy as np
import torch

from hive_core.base.stage import Part, Stage
from hive_core.exec.errors import ExecError
from hive_core.protocol.inference import WeightsKind
from hive_core.protocol.tensor import Dtype

_CTX = struct.Struct("<3s16sIHHBI")
WEIGHTS_TO_WIRE = {"fp32": WeightsKind.FP32, "packed": WeightsKind.PACKED, "bf16": WeightsKind.BF16}
WEIGHTS_FROM_WIRE = {v: k for k, v in WEIGHTS_TO_WIRE.items()}
WIRE_NAMES = {"fp32": Dtype.F32, "fp16": Dtype.F16, "bf16": Dtype.BF16}
_ITEM = {Dtype.F32: 4, Dtype.F16: 2, Dtype.BF16: 2}
# An attestation's `kv` byte names everything besides the kernel that changes a step's output
# bits: the KV cache kind (low nibble) and the wire's rounding of the output (high nibble;
# 0 for float32, so float32 statements read as they always did).
_WIRE_CODE = {Dtype.F32: 0, Dtype.F16: 1, Dtype.BF16: 2}
_CODE_WIRE = {v: k for k, v in _WIRE_CODE.items()}
F16_MAX = 65504.0


class WireError(ExecError):
    """Hidden states that cannot travel in the requested dtype, or bytes that do not decode."""


class WireRangeError(WireError):
    """Hidden states past float16's range: this model's states need the bf16 or fp32 wire."""


def seal_context(direction: bytes, session_id: bytes, step: int, stage: Stage, position: int) -> bytes:
    """What a sealed payload is bound to: direction (b"in"/b"out"), session, step, stage, position."""
    return _CTX.pack(direction, session_id, step, stage.start, stage.end,
                     int(stage.part), position)


def wire_dtype(name: str) -> Dtype:
    """The dtype a `--wire` name (fp32, fp16, bf16) stands for."""
    try:
        return WIRE_NAMES[name]
    except KeyError:
        raise WireError(f"wire dtype must be one of {', '.join(WIRE_NAMES)}, got {name!r}") from None


def attested_kv(kv: int, wire: Dtype) -> int:
    """The `kv` byte an attestation signs for a step with cache kind `kv` on `wire`."""
    return int(kv) | (_WIRE_CODE[wire] << 4)


def split_kv(value: int) -> tuple[int, Dtype]:
    """Inverse of `attested_kv`: (KV cache kind, wire dtype); WireError for an unknown wire."""
    wire = _CODE_WIRE.get(value >> 4)
    if wire is None:
        raise WireError(f"unknown wire code {value >> 4} in a statement's kv byte")
    return value & 0x0F, wire


def to_wire(rows: np.ndarray, wire: Dtype) -> bytes:
    """The bytes of float32 `rows` as they travel in `wire` (16-bit: rounded to nearest even)."""
    a = np.ascontiguousarray(rows, dtype="<f4")
    if wire is Dtype.F32:
        return a.tobytes()
    if wire is Dtype.F16:
        if a.size and float(np.abs(a).max()) > F16_MAX:
            raise WireRangeError(f"hidden states reach {float(np.abs(a).max()):.0f}, past float16's "
                            f"{F16_MAX:.0f}: use the bf16 or fp32 wire")
        return a.astype("<f2").tobytes()
    if wire is Dtype.BF16:
        return torch.from_numpy(a.copy()).to(torch.bfloat16).view(torch.int16).numpy().tobytes()
    raise WireError(f"hidden states do not travel as {wire.name}")


def from_wire(data: bytes, tokens: int, hidden: int, wire: Dtype) -> np.ndarray:
    """float32 [tokens, hidden] from wire bytes (exact: every 16-bit value widens losslessly),
    checking the size and that every value is finite."""
    item = _ITEM.get(wire)
    if item is None:
        raise WireError(f"hidden states do not travel as {wire.name}")
    if tokens < 1 or len(data) != tokens * hidden * item:
        raise WireError(f"hidden states of {len(data)} bytes do not fit [{tokens}, {hidden}] "
                        f"{wire.name}")
    if wire is Dtype.F32:
        arr = np.frombuffer(data, dtype="<f4")
    elif wire is Dtype.F16:
        arr = np.frombuffer(data, dtype="<f2").astype("<f4")
    else:
        bits = torch.from_numpy(np.frombuffer(data, dtype="<i2").copy())
        arr = bits.view(torch.bfloat16).to(torch.float32).numpy()
    arr = arr.reshape(tokens, hidden)
    if not np.isfinite(arr).all():
        raise WireError("hidden states contain NaN or infinity")
    return arr


def round_wire(rows: np.ndarray, wire: Dtype) -> np.ndarray:
    """float32 `rows` as the receiver of them on `wire` reads them."""
    if wire is Dtype.F32:
        return np.ascontiguousarray(rows, dtype="<f4")
    return from_wire(to_wire(rows, wire), rows.shape[0], rows.shape[1], wire)


def hidden_bytes(h: torch.Tensor, wire: Dtype = Dtype.F32) -> bytes:
    """float32 little-endian bytes of a [tokens, hidden] tensor, rounded as `wire` carries it."""
    a = np.ascontiguousarray(h.detach().to(torch.float32).numpy(), dtype="<f4")
    return round_wire(a, wire).tobytes()


def hidden_from_bytes(data: bytes, tokens: int, hidden: int) -> np.ndarray:
    """Inverse of `hidden_bytes`, checking the size and that every value is finite."""
    return from_wire(data, tokens, hidden, Dtype.F32)


def stage_of(layer_start: int, layer_end: int, part: Part) -> Stage:
    return Stage(layer_start, layer_end, Part(part))

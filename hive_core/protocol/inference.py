"""Inference wire messages (tags 0x40-0x7F): stage requests, sealed results, receipts, and
the cascade's signed routes.

Hidden states travel only inside `payload`, sealed for the one node that must read them
(`hive_core.trust.seal`), as float32, float16 or bfloat16 (`wire`); token ids and text never
appear in these messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated

from hive_core.base.codec import MAX_FRAME_BYTES, Nested, message, wire_struct
from hive_core.base.errors import ProtocolError
from hive_core.base.fields import Blob, Bool, EnumOf, Fixed, Float, ListOf, Maybe, Text, UInt
from hive_core.base.ids import SESSION_BYTES
from hive_core.base.stage import Part
from hive_core.economy.receipt import MAX_SIZE as MAX_RECEIPT_BYTES
from hive_core.protocol.messages import ErrorCode
from hive_core.protocol.tensor import Dtype
from hive_core.protocol.trust import DIGEST_BYTES, MAX_KERNEL_CLASS, Attestation

MAX_PAYLOAD = MAX_FRAME_BYTES - 4096  # room for the other fields of a RunStage / StageResult
MAX_MODEL_NAME = 128
# A cascade's route (its signed header) must fit the 4 KiB a frame keeps beside the payload:
# 16 hops of 4 replicas' keys is 2.2 KiB. Longer routes or more replicas go by the star.
MAX_ROUTE = 16
MAX_CASCADE_REPLICAS = 4
WIRE_DTYPES = (Dtype.F32, Dtype.F16, Dtype.BF16)  # how hidden states may travel


class ExecMsgType(IntEnum):
    """Tags of the inference messages."""

    RUN_STAGE = 0x40
    STAGE_RESULT = 0x41
    END_SESSION = 0x42
    RECEIPT = 0x43
    SHARD_QUERY = 0x44
    SHARD_INFO = 0x45
    RUN_CASCADE = 0x46
    CASCADE_RESULT = 0x47


class KvKind(IntEnum):
    """The KV cache a session asks its shard servers to keep."""

    FP32 = 1
    INT4 = 2


class WeightsKind(IntEnum):
    """How a shard server holds its matrices (`hive_core.model.modes`): replicas in different
    modes differ by more than the replica tolerance, so only same-mode replicas are compared."""

    FP32 = 1
    PACKED = 2
    BF16 = 3


@message(ExecMsgType.RUN_STAGE)
@dataclass(frozen=True)
class RunStage:
    """Run layers `layer_start..layer_end` (`part`) on sealed hidden states at `position`.

    A position below what the server's cache holds rolls the cache back first (rejected
    speculative tokens); a position above it is refused, and the client rebuilds.
    """

    rpc_id: Annotated[int, UInt(8)]
    session_id: Annotated[bytes, Fixed(SESSION_BYTES)]
    step: Annotated[int, UInt(4)]  # the client's forward-pass counter: binds seal + attestation
    layer_start: Annotated[int, UInt(2)]
    layer_end: Annotated[int, UInt(2)]
    part: Annotated[Part, EnumOf(Part)]
    position: Annotated[int, UInt(4)]
    tokens: Annotated[int, UInt(4)]  # rows of the sealed hidden states
    kv: Annotated[KvKind, EnumOf(KvKind)]
    attest: Annotated[bool, Bool()]  # sign a Merkle root of the output (verification on)
    payload: Annotated[bytes, Blob(MAX_PAYLOAD)]  # sealed [tokens, hidden] in `wire`
    wire: Annotated[Dtype, EnumOf(Dtype)] = Dtype.F32  # the input's and the output's dtype

    def __post_init__(self) -> None:
        if self.layer_end <= self.layer_start:
            raise ProtocolError(f"empty layer range {self.layer_start}..{self.layer_end}")
        if self.tokens < 1:
            raise ProtocolError("a stage request needs at least one token")
        _check_wire(self.wire)


@message(ExecMsgType.STAGE_RESULT)
@dataclass(frozen=True)
class StageResult:
    """The sealed output of a RunStage (or why it failed), with the worker's attestation."""

    rpc_id: Annotated[int, UInt(8)]
    code: Annotated[ErrorCode, EnumOf(ErrorCode, 2)]  # OK, or why it failed
    error: Annotated[str, Text(256)]  # for people; empty when ok
    cache_len: Annotated[int, UInt(4)]  # positions the server's cache holds now
    compute_s: Annotated[float, Float()]  # seconds the worker spent computing
    attestation: Annotated[Attestation | None, Maybe(Nested(Attestation))]
    payload: Annotated[bytes, Blob(MAX_PAYLOAD)]  # sealed [tokens, hidden] in the request's wire

    @property
    def ok(self) -> bool:
        return self.code is ErrorCode.OK


@message(ExecMsgType.END_SESSION)
@dataclass(frozen=True)
class EndSession:
    """The client is done with a session: free its caches now rather than at idle eviction."""

    session_id: Annotated[bytes, Fixed(SESSION_BYTES)]


@message(ExecMsgType.RECEIPT)
@dataclass(frozen=True)
class ReceiptMsg:
    """A client-signed work receipt for a stage the receiver served (it keeps it)."""

    receipt: Annotated[bytes, Blob(MAX_RECEIPT_BYTES)]  # WorkReceipt bytes


@message(ExecMsgType.SHARD_QUERY)
@dataclass(frozen=True)
class ShardQuery:
    """What do you serve? Answered by ShardInfo."""

    rpc_id: Annotated[int, UInt(8)]


@message(ExecMsgType.SHARD_INFO)
@dataclass(frozen=True)
class ShardInfo:
    """A shard server's model and preloaded layers, and its Health Vector in brief."""

    rpc_id: Annotated[int, UInt(8)]
    model: Annotated[str, Text(MAX_MODEL_NAME)]  # GGUF file name
    n_layers: Annotated[int, UInt(2)]
    hidden: Annotated[int, UInt(4)]
    layer_start: Annotated[int, UInt(2)]  # preloaded range (it loads others on demand)
    layer_end: Annotated[int, UInt(2)]
    tflops: Annotated[float, Float()]
    free_ram_mb: Annotated[float, Float()]
    on_ac: Annotated[bool, Bool()]
    weights: Annotated[WeightsKind, EnumOf(WeightsKind)] = WeightsKind.FP32  # matrices' form
    # What its attestations will name (`hive_core.trust.kernels`): replicas of one class must
    # agree to the bit; the asker compares other classes within their calibrated bound.
    kernel: Annotated[str, Text(MAX_KERNEL_CLASS)] = ""
    model_digest: Annotated[bytes, Fixed(DIGEST_BYTES)] = bytes(DIGEST_BYTES)  # of its GGUF file


def _check_wire(wire: Dtype) -> None:
    if wire not in WIRE_DTYPES:
        raise ProtocolError(f"hidden states travel as F32, F16 or BF16, not {wire.name}")


@wire_struct
@dataclass(frozen=True)
class CascadeHop:
    """One stage of a cascade's route: its layers and the Ed25519 keys of its replicas (their
    hash is the node id; the key is what a carrier seals to). The first replica carries the
    stage's output on to the next hop's replicas; the others only report their commitment."""

    layer_start: Annotated[int, UInt(2)]
    layer_end: Annotated[int, UInt(2)]
    part: Annotated[Part, EnumOf(Part)]
    nodes: Annotated[tuple[bytes, ...], ListOf(Fixed(32), MAX_CASCADE_REPLICAS)]

    def __post_init__(self) -> None:
        if self.layer_end <= self.layer_start:
            raise ProtocolError(f"empty layer range {self.layer_start}..{self.layer_end}")
        if not self.nodes:
            raise ProtocolError("a cascade hop needs at least one node")
        if len(set(self.nodes)) != len(self.nodes):
            raise ProtocolError("a cascade hop lists a node twice")


@wire_struct
@dataclass(frozen=True)
class CascadeRoute:
    """What the asker signs for one step of a cascade: every node checks it before computing,
    and forwards only to the next hop's nodes it names (never further than its length)."""

    asker_key: Annotated[bytes, Fixed(32)]  # Ed25519 key of the asker: results go to its id
    session_id: Annotated[bytes, Fixed(SESSION_BYTES)]
    step: Annotated[int, UInt(4)]
    position: Annotated[int, UInt(4)]
    tokens: Annotated[int, UInt(4)]
    kv: Annotated[KvKind, EnumOf(KvKind)]
    attest: Annotated[bool, Bool()]
    wire: Annotated[Dtype, EnumOf(Dtype)]
    hops: Annotated[tuple[CascadeHop, ...], ListOf(Nested(CascadeHop), MAX_ROUTE)]
    signature: Annotated[bytes, Fixed(64)]  # the asker's, over CASCADE_CONTEXT + the above

    def __post_init__(self) -> None:
        if self.tokens < 1:
            raise ProtocolError("a cascade step needs at least one token")
        if not self.hops:
            raise ProtocolError("a cascade route needs at least one hop")
        _check_wire(self.wire)


@message(ExecMsgType.RUN_CASCADE)
@dataclass(frozen=True)
class RunCascade:
    """Run hop `index` of a signed route on sealed hidden states (sealed by the sender: the
    asker for hop 0, the previous hop's carrier after that)."""

    route: Annotated[CascadeRoute, Nested(CascadeRoute)]
    index: Annotated[int, UInt(1)]  # the hop the receiver serves
    payload: Annotated[bytes, Blob(MAX_PAYLOAD)]  # sealed [tokens, hidden] in the route's wire

    def __post_init__(self) -> None:
        if self.index >= len(self.route.hops):
            raise ProtocolError(f"hop {self.index} of a {len(self.route.hops)}-hop route")


@message(ExecMsgType.CASCADE_RESULT)
@dataclass(frozen=True)
class CascadeResult:
    """A cascade node's report to the asker: its signed commitment, and from a hop's carrier
    its output sealed for the asker (what it forwarded; the last hop's is the answer)."""

    session_id: Annotated[bytes, Fixed(SESSION_BYTES)]
    step: Annotated[int, UInt(4)]
    index: Annotated[int, UInt(1)]
    code: Annotated[ErrorCode, EnumOf(ErrorCode, 2)]  # OK, or why it failed or refused
    error: Annotated[str, Text(256)]  # for people; empty when ok
    cache_len: Annotated[int, UInt(4)]
    compute_s: Annotated[float, Float()]
    attestation: Annotated[Attestation | None, Maybe(Nested(Attestation))]
    payload: Annotated[bytes, Blob(MAX_PAYLOAD)]  # sealed output (carrier), else empty

    @property
    def ok(self) -> bool:
        return self.code is ErrorCode.OK

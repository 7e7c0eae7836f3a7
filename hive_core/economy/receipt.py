"""Signed work receipts: the client's statement that a worker served one stage of a session."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Annotated

from hive_core.base.codec import decode_struct, encode_struct, wire_struct
from hive_core.base.errors import ProtocolError
from hive_core.base.fields import Bool, EnumOf, Fixed, Int, Maybe, UInt
from hive_core.base.identity import Identity, IdentityError, node_id_of, verify
from hive_core.base.ids import ID_BYTES, SESSION_BYTES
from hive_core.base.stage import Part

from .efficiency import reward_mc
from .errors import ReceiptError

VERSION = 1  # first byte of a receipt's bytes; bump when the struct changes
# Domain separation: a receipt signature can never be replayed as another message type.
SIGNING_CONTEXT = b"cadencia/receipt/v1\x00"
SIGNATURE_BYTES = 64
PUBLIC_KEY_BYTES = 32
# The longest receipt: version, session, worker, client key, layer span (2 x u16), part,
# tokens (u32), wall time, timestamp (2 x u64), stability (u16), temperature (presence +
# i16), battery (presence + u8), on AC, signature. Receipts without a sensor are shorter.
MAX_SIZE = (1 + SESSION_BYTES + ID_BYTES + PUBLIC_KEY_BYTES + 2 + 2 + 1 + 4 + 8 + 8 + 2
            + (1 + 2) + (1 + 1) + 1 + SIGNATURE_BYTES)
MAX_LAYERS = 4096
TEMP_RANGE_DC = (-500, 1500)  # -50 °C .. 150 °C: anything else is a broken sensor or a lie


@wire_struct
@dataclass(frozen=True)
class WorkReceipt:
    """One stage served: who worked, for whom, on what, how long, in what device state.

    Fields hold the canonical integer encoding, so `parse(bytes(r)) == r` exactly; the
    float views (`wall_time_s`, `stability`, `temperature_c`) are properties. Every field
    is checked on construction (ReceiptError); `signature` is empty until signed.
    """

    session_id: Annotated[bytes, Fixed(SESSION_BYTES)]  # chosen by the client per session
    worker_id: Annotated[bytes, Fixed(ID_BYTES)]  # node id of the worker that earns the credits
    client_public_key: Annotated[bytes, Fixed(PUBLIC_KEY_BYTES)]  # Ed25519 key of the signer
    layer_start: Annotated[int, UInt(2)]
    layer_end: Annotated[int, UInt(2)]  # exclusive
    part: Annotated[Part, EnumOf(Part)]
    tokens: Annotated[int, UInt(4)]  # tokens pushed through the stage (prompt + generated)
    wall_time_us: Annotated[int, UInt(8)]
    timestamp_ms: Annotated[int, UInt(8)]  # ms since the Unix epoch
    stability_permille: Annotated[int, UInt(2)]  # the worker's uptime over its Health window
    temperature_dc: Annotated[int | None, Maybe(Int(2))]  # deci-°C, None if not reported
    battery_pct: Annotated[int | None, Maybe(UInt(1))]  # None without a battery
    on_ac: Annotated[bool, Bool()]
    signature: Annotated[bytes, Fixed(SIGNATURE_BYTES)] = b""  # over SIGNING_CONTEXT + body()

    def __post_init__(self) -> None:
        _check_bytes("session id", self.session_id, SESSION_BYTES)
        _check_bytes("worker id", self.worker_id, ID_BYTES)
        _check_bytes("client public key", self.client_public_key, PUBLIC_KEY_BYTES)
        if self.signature != b"":
            _check_bytes("signature", self.signature, SIGNATURE_BYTES)
        if not (_is_int(self.layer_start) and _is_int(self.layer_end)
                and 0 <= self.layer_start < self.layer_end <= MAX_LAYERS):
            raise ReceiptError(f"bad layer span [{self.layer_start}, {self.layer_end})")
        if not isinstance(self.part, Part):
            raise ReceiptError(f"part must be a Part, got {self.part!r}")
        if not (_is_int(self.tokens) and 0 < self.tokens < 2**32):
            raise ReceiptError(f"tokens must be positive, got {self.tokens}")
        if not (_is_int(self.wall_time_us) and 0 < self.wall_time_us < 2**64):
            raise ReceiptError(f"wall time must be positive, got {self.wall_time_us} µs")
        if not (_is_int(self.timestamp_ms) and 0 <= self.timestamp_ms < 2**64):
            raise ReceiptError(f"bad timestamp {self.timestamp_ms}")
        if not (_is_int(self.stability_permille) and 0 <= self.stability_permille <= 1000):
            raise ReceiptError(f"stability must be in [0, 1], got {self.stability_permille}‰")
        t = self.temperature_dc
        if t is not None and not _is_int(t):
            raise ReceiptError(f"temperature must be whole deci-°C, got {t!r}")
        if t is not None and not TEMP_RANGE_DC[0] <= t <= TEMP_RANGE_DC[1]:
            raise ReceiptError(f"temperature {t / 10} °C out of range")
        b = self.battery_pct
        if b is not None and not (_is_int(b) and 0 <= b <= 100):
            raise ReceiptError(f"battery must be in [0, 100] %, got {b}")
        if not isinstance(self.on_ac, bool):
            raise ReceiptError(f"on_ac must be a bool, got {self.on_ac!r}")
        # A node paying itself would mint credits from nothing.
        if self.client_id == self.worker_id:
            raise ReceiptError("a receipt's client and worker must differ")

    @classmethod
    def create(
        cls,
        client: Identity,
        *,
        session_id: bytes,
        worker_id: bytes,
        layer_start: int,
        layer_end: int,
        part: Part,
        tokens: int,
        wall_time_s: float,
        timestamp_ms: int,
        stability: float,
        temperature_c: float | None,
        battery_pct: float | None,
        on_ac: bool,
    ) -> WorkReceipt:
        """Build and sign a receipt with the client's key (floats rounded to the encoding)."""
        try:
            part = Part(part)
            wall_time_us = round(wall_time_s * 1e6)
            stability_permille = round(stability * 1000)
            temperature_dc = None if temperature_c is None else round(temperature_c * 10)
            battery = None if battery_pct is None else round(battery_pct)
        except (ValueError, OverflowError, TypeError) as exc:  # NaN, infinity, not a number
            raise ReceiptError(f"receipt field out of range: {exc}") from None
        unsigned = cls(
            session_id=session_id,
            worker_id=worker_id,
            client_public_key=client.public_key,
            layer_start=layer_start,
            layer_end=layer_end,
            part=part,
            tokens=tokens,
            wall_time_us=wall_time_us,
            timestamp_ms=timestamp_ms,
            stability_permille=stability_permille,
            temperature_dc=temperature_dc,
            battery_pct=battery,
            on_ac=bool(on_ac),
        )
        return replace(unsigned, signature=client.sign(SIGNING_CONTEXT + unsigned.body()))

    def body(self) -> bytes:
        """The canonical bytes the signature covers: the struct with its signature zeroed."""
        return encode_struct(replace(self, signature=bytes(SIGNATURE_BYTES)))

    def __bytes__(self) -> bytes:
        if len(self.signature) != SIGNATURE_BYTES:
            raise ReceiptError("receipt is not signed")
        return bytes((VERSION,)) + encode_struct(self)

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> WorkReceipt:
        """Strictly decode a signed receipt (does not check the signature: see `verify`).

        Raises ReceiptError, and nothing else, on any malformed input.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ReceiptError(f"receipt must be bytes, got {type(data).__name__}")
        data = bytes(data)
        if not data:
            raise ReceiptError("empty receipt")
        if data[0] != VERSION:
            raise ReceiptError(f"unknown receipt version {data[0]}")
        try:
            return decode_struct(data[1:], cls, max_bytes=MAX_SIZE - 1)
        except ProtocolError as exc:
            reason = exc.__cause__ if isinstance(exc.__cause__, ReceiptError) else exc
            raise ReceiptError(f"malformed receipt: {reason}") from exc

    def verify(self) -> None:
        """Raise ReceiptError unless the client's signature covers exactly these fields."""
        try:
            verify(self.client_public_key, SIGNING_CONTEXT + self.body(), self.signature)
        except IdentityError as exc:
            raise ReceiptError(f"receipt {self.receipt_id[:12]}: {exc}") from None

    @property
    def receipt_id(self) -> str:
        """Hex BLAKE2b-128 of the signed body: the receipt's key in the ledger.

        The signature is left out on purpose: a signer can make many valid signatures of
        one message, and the same work must still be counted once.
        """
        return hashlib.blake2b(self.body(), digest_size=16).hexdigest()

    @property
    def client_id(self) -> bytes:
        return node_id_of(self.client_public_key)

    @property
    def n_layers(self) -> int:
        return self.layer_end - self.layer_start

    @property
    def wall_time_s(self) -> float:
        return self.wall_time_us / 1e6

    @property
    def stability(self) -> float:
        return self.stability_permille / 1000

    @property
    def temperature_c(self) -> float | None:
        return None if self.temperature_dc is None else self.temperature_dc / 10

    def reward_mc(self) -> int:
        """Milli-credits this receipt earns its worker (see `efficiency.reward_mc`)."""
        return reward_mc(
            self.n_layers,
            self.tokens,
            self.part,
            self.stability_permille,
            self.temperature_dc,
            self.battery_pct,
            self.on_ac,
        )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_bytes(name: str, value: object, size: int) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        raise ReceiptError(f"{name} must be {size} bytes")

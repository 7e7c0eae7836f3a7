"""Signed work receipts: the client's statement that a worker served one stage of a session."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from hive_core.base.identity import ID_BYTES, Identity, IdentityError, node_id_of, verify

from .efficiency import Part, reward_mc
from .errors import ReceiptError

VERSION = 1
# Domain separation: a receipt signature can never be replayed as another message type.
SIGNING_CONTEXT = b"cadencia/receipt/v1\x00"

# version, session id, worker id, client public key, layer start, layer end (exclusive),
# part, tokens, wall time (µs), timestamp (ms since the Unix epoch), worker stability
# (per-mille uptime), temperature (deci-°C, TEMP_UNKNOWN if not reported), battery (%,
# BATTERY_UNKNOWN if none), on AC (0/1).
_BODY = struct.Struct(f"<B16s{ID_BYTES}s32sHHBIQQHhBB")
SIGNATURE_BYTES = 64
SIZE = _BODY.size + SIGNATURE_BYTES
TEMP_UNKNOWN = -32768
BATTERY_UNKNOWN = 255
MAX_LAYERS = 4096
TEMP_RANGE_DC = (-500, 1500)  # -50 °C .. 150 °C: anything else is a broken sensor or a lie


@dataclass(frozen=True)
class WorkReceipt:
    """One stage served: who worked, for whom, on what, how long, in what device state.

    Fields hold the canonical integer encoding, so `parse(bytes(r)) == r` exactly; the
    float views (`wall_time_s`, `stability`, `temperature_c`) are properties.
    """

    session_id: bytes  # 16 bytes chosen by the client for the generation session
    worker_id: bytes  # node id of the worker that earns the credits
    client_public_key: bytes  # Ed25519 key of the client that signs
    layer_start: int
    layer_end: int  # exclusive
    part: Part
    tokens: int  # tokens pushed through the stage (prompt + generated)
    wall_time_us: int
    timestamp_ms: int
    stability_permille: int  # the worker's uptime over its Health Vector window
    temperature_dc: int | None
    battery_pct: int | None
    on_ac: bool
    signature: bytes = b""

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
        unsigned = cls(
            session_id=session_id,
            worker_id=worker_id,
            client_public_key=client.public_key,
            layer_start=layer_start,
            layer_end=layer_end,
            part=Part(part),
            tokens=tokens,
            wall_time_us=round(wall_time_s * 1e6),
            timestamp_ms=timestamp_ms,
            stability_permille=round(stability * 1000),
            temperature_dc=None if temperature_c is None else round(temperature_c * 10),
            battery_pct=None if battery_pct is None else round(battery_pct),
            on_ac=bool(on_ac),
        )
        unsigned._check_fields()
        return unsigned._with_signature(client.sign(SIGNING_CONTEXT + unsigned.body()))

    def _with_signature(self, signature: bytes) -> WorkReceipt:
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        fields["signature"] = signature
        return WorkReceipt(**fields)

    def body(self) -> bytes:
        """The canonical signed bytes (everything but the signature)."""
        return _BODY.pack(
            VERSION,
            self.session_id,
            self.worker_id,
            self.client_public_key,
            self.layer_start,
            self.layer_end,
            int(self.part),
            self.tokens,
            self.wall_time_us,
            self.timestamp_ms,
            self.stability_permille,
            TEMP_UNKNOWN if self.temperature_dc is None else self.temperature_dc,
            BATTERY_UNKNOWN if self.battery_pct is None else self.battery_pct,
            int(self.on_ac),
        )

    def __bytes__(self) -> bytes:
        if len(self.signature) != SIGNATURE_BYTES:
            raise ReceiptError("receipt is not signed")
        return self.body() + self.signature

    @classmethod
    def parse(cls, data: bytes) -> WorkReceipt:
        """Strictly decode a signed receipt (does not check the signature: see `verify`)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ReceiptError(f"receipt must be bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) != SIZE:
            raise ReceiptError(f"receipt must be {SIZE} bytes, got {len(data)}")
        if data[0] != VERSION:
            raise ReceiptError(f"unknown receipt version {data[0]}")
        (_, session, worker, client_pk, start, end, part, tokens, wall_us, ts_ms, stab,
         temp, battery, on_ac) = _BODY.unpack_from(data)
        try:
            part_enum = Part(part)
        except ValueError:
            raise ReceiptError(f"unknown part {part}") from None
        if on_ac not in (0, 1):
            raise ReceiptError(f"on_ac must be 0 or 1, got {on_ac}")
        receipt = cls(
            session_id=session,
            worker_id=worker,
            client_public_key=client_pk,
            layer_start=start,
            layer_end=end,
            part=part_enum,
            tokens=tokens,
            wall_time_us=wall_us,
            timestamp_ms=ts_ms,
            stability_permille=stab,
            temperature_dc=None if temp == TEMP_UNKNOWN else temp,
            battery_pct=None if battery == BATTERY_UNKNOWN else battery,
            on_ac=bool(on_ac),
            signature=data[_BODY.size:],
        )
        receipt._check_fields()
        return receipt

    def _check_fields(self) -> None:
        if len(self.session_id) != 16:
            raise ReceiptError("session id must be 16 bytes")
        if len(self.worker_id) != ID_BYTES:
            raise ReceiptError(f"worker id must be {ID_BYTES} bytes")
        if len(self.client_public_key) != 32:
            raise ReceiptError("client public key must be 32 bytes")
        if not 0 <= self.layer_start < self.layer_end <= MAX_LAYERS:
            raise ReceiptError(f"bad layer span [{self.layer_start}, {self.layer_end})")
        if not 0 < self.tokens < 2**32:
            raise ReceiptError(f"tokens must be positive, got {self.tokens}")
        if not 0 < self.wall_time_us < 2**64:
            raise ReceiptError(f"wall time must be positive, got {self.wall_time_us} µs")
        if not 0 <= self.timestamp_ms < 2**64:
            raise ReceiptError(f"bad timestamp {self.timestamp_ms}")
        if not 0 <= self.stability_permille <= 1000:
            raise ReceiptError(f"stability must be in [0, 1], got {self.stability_permille}‰")
        t = self.temperature_dc
        if t is not None and not TEMP_RANGE_DC[0] <= t <= TEMP_RANGE_DC[1]:
            raise ReceiptError(f"temperature {t / 10} °C out of range")
        if self.battery_pct is not None and not 0 <= self.battery_pct <= 100:
            raise ReceiptError(f"battery must be in [0, 100] %, got {self.battery_pct}")
        # A node paying itself would mint credits from nothing.
        if self.client_id == self.worker_id:
            raise ReceiptError("a receipt's client and worker must differ")

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

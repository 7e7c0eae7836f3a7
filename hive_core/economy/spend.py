"""Signed spend entries: a player pays credits, e.g. to raise a building."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Annotated

from hive_core.base.codec import decode_struct, encode_struct, wire_struct
from hive_core.base.errors import ProtocolError
from hive_core.base.fields import Fixed, Text, UInt
from hive_core.base.identity import Identity, IdentityError, node_id_of, verify

from .errors import SpendError

VERSION = 1  # first byte of a spend's bytes; bump when the struct changes
SIGNING_CONTEXT = b"cadencia/spend/v1\x00"
SPEND_ID_BYTES = 16
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
MAX_PURPOSE_BYTES = 96
# version, spend id, account key, amount and timestamp (2 x u64), purpose (u32 length +
# UTF-8), signature.
MAX_SIZE = 1 + SPEND_ID_BYTES + PUBLIC_KEY_BYTES + 8 + 8 + 4 + MAX_PURPOSE_BYTES + SIGNATURE_BYTES


@wire_struct
@dataclass(frozen=True)
class Spend:
    """An account's signed order to pay `amount_mc` milli-credits for `purpose`.

    Every field is checked on construction (SpendError); `signature` is empty until signed.
    """

    spend_id: Annotated[bytes, Fixed(SPEND_ID_BYTES)]  # random, unique per account: no double spend
    account_public_key: Annotated[bytes, Fixed(PUBLIC_KEY_BYTES)]  # the paying player's key; it signs
    amount_mc: Annotated[int, UInt(8)]
    timestamp_ms: Annotated[int, UInt(8)]  # orders concurrent spends of one account (ties by id)
    purpose: Annotated[str, Text(MAX_PURPOSE_BYTES)]  # what was bought, e.g. "building:<id>"
    signature: Annotated[bytes, Fixed(SIGNATURE_BYTES)] = b""  # over SIGNING_CONTEXT + body()

    def __post_init__(self) -> None:
        if not isinstance(self.spend_id, bytes) or len(self.spend_id) != SPEND_ID_BYTES:
            raise SpendError(f"spend id must be {SPEND_ID_BYTES} bytes")
        if (not isinstance(self.account_public_key, bytes)
                or len(self.account_public_key) != PUBLIC_KEY_BYTES):
            raise SpendError(f"account public key must be {PUBLIC_KEY_BYTES} bytes")
        if self.signature != b"" and (not isinstance(self.signature, bytes)
                                      or len(self.signature) != SIGNATURE_BYTES):
            raise SpendError(f"signature must be {SIGNATURE_BYTES} bytes")
        if not (_is_int(self.amount_mc) and 0 < self.amount_mc < 2**63):
            raise SpendError(f"amount must be positive, got {self.amount_mc}")
        if not (_is_int(self.timestamp_ms) and 0 <= self.timestamp_ms < 2**64):
            raise SpendError(f"bad timestamp {self.timestamp_ms}")
        if not isinstance(self.purpose, str):
            raise SpendError(f"purpose must be text, got {type(self.purpose).__name__}")
        try:
            size = len(self.purpose.encode("utf-8"))
        except UnicodeEncodeError:  # a lone surrogate
            raise SpendError("purpose is not encodable as UTF-8") from None
        if size > MAX_PURPOSE_BYTES:
            raise SpendError(f"purpose longer than {MAX_PURPOSE_BYTES} bytes")

    @classmethod
    def create(
        cls,
        player: Identity,
        *,
        amount_mc: int,
        purpose: str,
        timestamp_ms: int,
        spend_id: bytes | None = None,
    ) -> Spend:
        """Build and sign a spend; a fresh random id unless one is given."""
        unsigned = cls(
            spend_id=os.urandom(SPEND_ID_BYTES) if spend_id is None else spend_id,
            account_public_key=player.public_key,
            amount_mc=amount_mc,
            timestamp_ms=timestamp_ms,
            purpose=purpose,
        )
        return replace(unsigned, signature=player.sign(SIGNING_CONTEXT + unsigned.body()))

    def body(self) -> bytes:
        """The canonical bytes the signature covers: the struct with its signature zeroed."""
        return encode_struct(replace(self, signature=bytes(SIGNATURE_BYTES)))

    def __bytes__(self) -> bytes:
        if len(self.signature) != SIGNATURE_BYTES:
            raise SpendError("spend is not signed")
        return bytes((VERSION,)) + encode_struct(self)

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> Spend:
        """Strictly decode a signed spend (does not check the signature: see `verify`).

        Raises SpendError, and nothing else, on any malformed input.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise SpendError(f"spend must be bytes, got {type(data).__name__}")
        data = bytes(data)
        if not data:
            raise SpendError("empty spend")
        if data[0] != VERSION:
            raise SpendError(f"unknown spend version {data[0]}")
        try:
            return decode_struct(data[1:], cls, max_bytes=MAX_SIZE - 1)
        except ProtocolError as exc:
            reason = exc.__cause__ if isinstance(exc.__cause__, SpendError) else exc
            raise SpendError(f"malformed spend: {reason}") from exc

    def verify(self) -> None:
        """Raise SpendError unless the account's own key signed exactly these fields."""
        try:
            verify(self.account_public_key, SIGNING_CONTEXT + self.body(), self.signature)
        except IdentityError as exc:
            raise SpendError(f"spend {self.spend_id_hex}: {exc}") from None

    @property
    def spend_id_hex(self) -> str:
        return self.spend_id.hex()

    @property
    def account_id(self) -> bytes:
        """Node id of the paying key: the account charged."""
        return node_id_of(self.account_public_key)

    @property
    def order_key(self) -> tuple[int, bytes]:
        """The deterministic order of one account's spends: (timestamp, spend id)."""
        return (self.timestamp_ms, self.spend_id)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)

"""Signed spend entries: a player pays credits, e.g. to raise a building."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from hive_core.base.identity import Identity, IdentityError, node_id_of, verify

from .errors import SpendError

VERSION = 1
SIGNING_CONTEXT = b"cadencia/spend/v1\x00"
# version, spend id, account public key, amount (milli-credits), timestamp (ms), purpose
# length; then the UTF-8 purpose, then the signature.
_HEAD = struct.Struct("<B16s32sQQB")
SIGNATURE_BYTES = 64
MAX_PURPOSE_BYTES = 96
MIN_SIZE = _HEAD.size + SIGNATURE_BYTES


@dataclass(frozen=True)
class Spend:
    """An account's signed order to pay `amount_mc` milli-credits for `purpose`."""

    spend_id: bytes  # 16 random bytes, unique per account: the double-spend guard
    account_public_key: bytes  # Ed25519 key of the paying player; it signs
    amount_mc: int
    timestamp_ms: int  # orders concurrent spends of one account (ties by spend id)
    purpose: str  # what was bought, e.g. "building:<id>"
    signature: bytes = b""

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
            spend_id=os.urandom(16) if spend_id is None else spend_id,
            account_public_key=player.public_key,
            amount_mc=amount_mc,
            timestamp_ms=timestamp_ms,
            purpose=purpose,
        )
        unsigned._check_fields()
        signature = player.sign(SIGNING_CONTEXT + unsigned.body())
        return cls(
            unsigned.spend_id,
            unsigned.account_public_key,
            amount_mc,
            timestamp_ms,
            purpose,
            signature,
        )

    def _check_fields(self) -> None:
        if len(self.spend_id) != 16:
            raise SpendError("spend id must be 16 bytes")
        if len(self.account_public_key) != 32:
            raise SpendError("account public key must be 32 bytes")
        if not 0 < self.amount_mc < 2**63:
            raise SpendError(f"amount must be positive, got {self.amount_mc}")
        if not 0 <= self.timestamp_ms < 2**64:
            raise SpendError(f"bad timestamp {self.timestamp_ms}")
        if len(self.purpose.encode("utf-8")) > MAX_PURPOSE_BYTES:
            raise SpendError(f"purpose longer than {MAX_PURPOSE_BYTES} bytes")

    def body(self) -> bytes:
        """The canonical signed bytes."""
        purpose = self.purpose.encode("utf-8")
        head = _HEAD.pack(
            VERSION,
            self.spend_id,
            self.account_public_key,
            self.amount_mc,
            self.timestamp_ms,
            len(purpose),
        )
        return head + purpose

    def __bytes__(self) -> bytes:
        if len(self.signature) != SIGNATURE_BYTES:
            raise SpendError("spend is not signed")
        return self.body() + self.signature

    @classmethod
    def parse(cls, data: bytes) -> Spend:
        """Strictly decode a signed spend (does not check the signature: see `verify`)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise SpendError(f"spend must be bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) < MIN_SIZE:
            raise SpendError(f"spend too short: {len(data)} bytes")
        if data[0] != VERSION:
            raise SpendError(f"unknown spend version {data[0]}")
        _, spend_id, pk, amount, ts, plen = _HEAD.unpack_from(data)
        if len(data) != MIN_SIZE + plen:
            raise SpendError(f"spend must be {MIN_SIZE + plen} bytes, got {len(data)}")
        try:
            purpose = data[_HEAD.size:_HEAD.size + plen].decode("utf-8")
        except UnicodeDecodeError:
            raise SpendError("spend purpose is not UTF-8") from None
        spend = cls(spend_id, pk, amount, ts, purpose, data[_HEAD.size + plen:])
        spend._check_fields()
        return spend

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

"""Signed edits: one player's Yjs update, bound to their key and to a range of their clock.

A player's doc uses a Yjs client id derived from their public key, so every item they
create carries it. An edit says "my items with clocks [start, end) are in this update",
and the author signs that. Edits are relayed verbatim, so a peer can check who wrote
each change however many hops it travelled.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, replace
from typing import Annotated

from hive_core.base.codec import decode_struct, encode_struct, wire_struct
from hive_core.base.errors import ProtocolError
from hive_core.base.fields import Blob, Fixed, UInt
from hive_core.base.identity import Identity, IdentityError, node_id_of, verify

from .errors import EditError

VERSION = 1  # first byte of an edit's bytes; bump when the struct changes
SIGNING_CONTEXT = b"cadencia/world-edit/v1\x00"
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
MAX_UPDATE_BYTES = 192 * 1024  # a whole edit fits one data-channel message (< 256 KiB)
# version, author key, clock start and end (2 x u32), update (u32 length + bytes), signature
MAX_SIZE = 1 + PUBLIC_KEY_BYTES + 4 + 4 + 4 + MAX_UPDATE_BYTES + SIGNATURE_BYTES


@functools.lru_cache(maxsize=4096)
def client_id_of(public_key: bytes) -> int:
    """The Yjs client id a player's doc must use: 32 bits of BLAKE2b of the key.

    32 bits (not 53) because JavaScript Yjs peers treat client ids as uint32.
    """
    return int.from_bytes(hashlib.blake2b(public_key, digest_size=4, person=b"yjs-client").digest(),
                          "little")


def player_id_of(public_key: bytes) -> str:
    """The player id written in `owner` fields: hex node id of the key."""
    return node_id_of(public_key).hex()


@wire_struct
@dataclass(frozen=True)
class SignedEdit:
    """An author's Yjs update covering their clock range [start, end), signed.

    Every field is checked on construction (EditError); `signature` is empty until signed.
    """

    author: Annotated[bytes, Fixed(PUBLIC_KEY_BYTES)]  # Ed25519 public key
    start: Annotated[int, UInt(4)]  # first Yjs clock of the author's items in `update`
    end: Annotated[int, UInt(4)]  # exclusive
    update: Annotated[bytes, Blob(MAX_UPDATE_BYTES)]  # Yjs update v1
    signature: Annotated[bytes, Fixed(SIGNATURE_BYTES)] = b""  # over SIGNING_CONTEXT + body()

    def __post_init__(self) -> None:
        if not isinstance(self.author, bytes) or len(self.author) != PUBLIC_KEY_BYTES:
            raise EditError(f"author key must be {PUBLIC_KEY_BYTES} bytes")
        if self.signature != b"" and (not isinstance(self.signature, bytes)
                                      or len(self.signature) != SIGNATURE_BYTES):
            raise EditError(f"signature must be {SIGNATURE_BYTES} bytes")
        if not (_is_int(self.start) and _is_int(self.end) and 0 <= self.start < self.end < 2**32):
            raise EditError(f"edit clock range [{self.start}, {self.end}) is empty or invalid")
        if not isinstance(self.update, bytes):
            raise EditError(f"edit update must be bytes, got {type(self.update).__name__}")
        if not 0 < len(self.update) <= MAX_UPDATE_BYTES:
            raise EditError(f"edit update must be 1..{MAX_UPDATE_BYTES} bytes, "
                            f"got {len(self.update)}")

    @classmethod
    def create(cls, author: Identity, start: int, end: int, update: bytes) -> SignedEdit:
        """Sign `update` as `author`'s items with clocks [start, end)."""
        unsigned = cls(author.public_key, start, end, bytes(update))
        return replace(unsigned, signature=author.sign(SIGNING_CONTEXT + unsigned.body()))

    def body(self) -> bytes:
        """The canonical bytes the signature covers: the struct with its signature zeroed."""
        return encode_struct(replace(self, signature=bytes(SIGNATURE_BYTES)))

    def __bytes__(self) -> bytes:
        if len(self.signature) != SIGNATURE_BYTES:
            raise EditError("edit is not signed")
        return bytes((VERSION,)) + encode_struct(self)

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> SignedEdit:
        """Strictly decode (the signature is checked by `verify`).

        Raises EditError, and nothing else, on any malformed input.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise EditError(f"edit must be bytes, got {type(data).__name__}")
        data = bytes(data)
        if not data:
            raise EditError("empty edit")
        if data[0] != VERSION:
            raise EditError(f"unknown edit version {data[0]}")
        try:
            return decode_struct(data[1:], cls, max_bytes=MAX_SIZE - 1)
        except ProtocolError as exc:
            reason = exc.__cause__ if isinstance(exc.__cause__, EditError) else exc
            raise EditError(f"malformed edit: {reason}") from exc

    def verify(self) -> None:
        try:
            verify(self.author, SIGNING_CONTEXT + self.body(), self.signature)
        except IdentityError as exc:
            raise EditError(f"edit by {self.author_id[:12]}: {exc}") from None

    @property
    def client_id(self) -> int:
        return client_id_of(self.author)

    @property
    def author_id(self) -> str:
        return player_id_of(self.author)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)

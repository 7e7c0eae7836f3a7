"""Signed edits: one player's Yjs update, bound to their key and to a range of their clock.

A player's doc uses a Yjs client id derived from their public key, so every item they
create carries it. An edit says "my items with clocks [start, end) are in this update",
and the author signs that. Edits are relayed verbatim, so a peer can check who wrote
each change however many hops it travelled.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from dataclasses import dataclass

from hive_core.base.identity import Identity, IdentityError, node_id_of, verify

from .errors import EditError

VERSION = 1
SIGNING_CONTEXT = b"cadencia/world-edit/v1\x00"
_HEAD = struct.Struct("<B32sIII")  # version, author key, clock start, clock end, update length
SIGNATURE_BYTES = 64
MAX_UPDATE_BYTES = 192 * 1024  # a whole edit fits one data-channel message (< 256 KiB)
MIN_SIZE = _HEAD.size + SIGNATURE_BYTES


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


@dataclass(frozen=True)
class SignedEdit:
    """An author's Yjs update covering their clock range [start, end), signed."""

    author: bytes  # Ed25519 public key, 32 bytes
    start: int
    end: int
    update: bytes  # Yjs update v1
    signature: bytes = b""

    @classmethod
    def create(cls, author: Identity, start: int, end: int, update: bytes) -> SignedEdit:
        unsigned = cls(author.public_key, start, end, bytes(update))
        unsigned._check()
        return cls(unsigned.author, start, end, unsigned.update,
                   author.sign(SIGNING_CONTEXT + unsigned.body()))

    def _check(self) -> None:
        if len(self.author) != 32:
            raise EditError("author key must be 32 bytes")
        if not 0 <= self.start < self.end < 2**32:
            raise EditError(f"edit clock range [{self.start}, {self.end}) is empty or invalid")
        if not 0 < len(self.update) <= MAX_UPDATE_BYTES:
            raise EditError(f"edit update must be 1..{MAX_UPDATE_BYTES} bytes, "
                            f"got {len(self.update)}")

    def body(self) -> bytes:
        return _HEAD.pack(VERSION, self.author, self.start, self.end, len(self.update)) + self.update

    def __bytes__(self) -> bytes:
        if len(self.signature) != SIGNATURE_BYTES:
            raise EditError("edit is not signed")
        return self.body() + self.signature

    @classmethod
    def parse(cls, data: bytes) -> SignedEdit:
        """Strictly decode (the signature is checked by `verify`)."""
        data = bytes(data)
        if len(data) < MIN_SIZE:
            raise EditError(f"edit too short: {len(data)} bytes")
        version, author, start, end, n = _HEAD.unpack_from(data)
        if version != VERSION:
            raise EditError(f"unknown edit version {version}")
        if len(data) != MIN_SIZE + n:
            raise EditError(f"edit must be {MIN_SIZE + n} bytes, got {len(data)}")
        update = data[_HEAD.size:_HEAD.size + n]
        edit = cls(author, start, end, update, data[_HEAD.size + n:])
        edit._check()
        return edit

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

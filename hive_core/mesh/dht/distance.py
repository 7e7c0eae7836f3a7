"""XOR distance between 160-bit ids and the DHT key derivations."""

from __future__ import annotations

import hashlib

ID_BITS = 160


def xor_distance(a: bytes, b: bytes) -> int:
    """Kademlia's metric: the ids XORed, read as a big-endian integer."""
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


def bucket_index(self_id: bytes, other: bytes) -> int:
    """Index of the k-bucket `other` falls in: bit length of the distance minus one (0..159)."""
    d = xor_distance(self_id, other)
    if d == 0:
        raise ValueError("a node does not keep itself in its routing table")
    return d.bit_length() - 1


def random_id_in_bucket(self_id: bytes, index: int, rand_bits: int) -> bytes:
    """An id whose distance from `self_id` has bit length index+1 (for bucket refresh)."""
    low = rand_bits & ((1 << index) - 1)
    d = (1 << index) | low
    return (int.from_bytes(self_id, "big") ^ d).to_bytes(len(self_id), "big")


def key_of(name: str) -> bytes:
    """The 160-bit DHT key of a textual name (BLAKE2b-160 of its UTF-8)."""
    return hashlib.blake2b(name.encode("utf-8"), digest_size=20).digest()

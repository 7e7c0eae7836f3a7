"""Merkle trees over a tensor's bytes cut in fixed chunks: roots, inclusion proofs, checks.

Leaves and inner nodes are hashed with different prefixes (RFC 6962 style) so a leaf can
never pass for an inner node. An odd node at the end of a level is carried up unchanged.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from hive_core.base.hoptiming import timed
from hive_core.trust.errors import TrustError

DIGEST_BYTES = 32
DEFAULT_CHUNK_BYTES = 4096
_LEAF, _NODE = b"\x00", b"\x01"


def _h(prefix: bytes, *parts: bytes | memoryview) -> bytes:
    h = hashlib.blake2b(prefix, digest_size=DIGEST_BYTES)
    for p in parts:
        h.update(p)
    return h.digest()


def leaf_hashes(data: bytes, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> list[bytes]:
    """One hash per `chunk_bytes` slice of `data` (an empty input has one empty leaf)."""
    if chunk_bytes < 1:
        raise TrustError(f"chunk size must be positive, got {chunk_bytes}")
    view = memoryview(data)
    n = max(1, -(-len(view) // chunk_bytes))
    return [_h(_LEAF, view[i * chunk_bytes:(i + 1) * chunk_bytes]) for i in range(n)]


def _levels(leaves: list[bytes]) -> list[list[bytes]]:
    levels = [leaves]
    while len(levels[-1]) > 1:
        cur = levels[-1]
        nxt = [_h(_NODE, cur[i], cur[i + 1]) for i in range(0, len(cur) - 1, 2)]
        if len(cur) % 2:
            nxt.append(cur[-1])
        levels.append(nxt)
    return levels


@timed("hashing")
def merkle_root(data: bytes, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> bytes:
    """The 32-byte root over `data` cut in `chunk_bytes` chunks."""
    return _levels(leaf_hashes(data, chunk_bytes))[-1][0]


@dataclass(frozen=True)
class Proof:
    """That chunk `index` of `count` belongs under a root: siblings bottom-up."""

    index: int
    count: int
    siblings: tuple[tuple[bytes, bool], ...]  # (hash, sibling_is_left)


def prove(data: bytes, index: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Proof:
    """Inclusion proof of chunk `index` of `data`."""
    levels = _levels(leaf_hashes(data, chunk_bytes))
    count = len(levels[0])
    if not 0 <= index < count:
        raise TrustError(f"chunk {index} out of range 0..{count - 1}")
    siblings, i = [], index
    for level in levels[:-1]:
        sib = i ^ 1
        if sib < len(level):
            siblings.append((level[sib], sib < i))
        i //= 2
    return Proof(index, count, tuple(siblings))


def verify_chunk(root: bytes, chunk: bytes, proof: Proof) -> None:
    """Raise TrustError unless `chunk` is chunk `proof.index` of the tree with `root`."""
    if not 0 <= proof.index < proof.count:
        raise TrustError("proof index out of range")
    h, i, width = _h(_LEAF, chunk), proof.index, proof.count
    it = iter(proof.siblings)
    while width > 1:
        if i ^ 1 < width:  # this level has a sibling for us
            try:
                sib, left = next(it)
            except StopIteration:
                raise TrustError("proof too short") from None
            if left != (i % 2 == 1):
                raise TrustError("proof sibling on the wrong side")
            h = _h(_NODE, sib, h) if left else _h(_NODE, h, sib)
        i //= 2
        width = (width + 1) // 2
    if next(it, None) is not None:
        raise TrustError("proof too long")
    if h != root:
        raise TrustError("chunk does not belong under this Merkle root")

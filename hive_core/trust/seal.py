"""End-to-end encryption of hop payloads for the one node that must read them.

Keys come from the nodes' Ed25519 identities (converted to Curve25519), so no extra key
exchange is needed: the asker and a shard server derive the same `Box` from their own
secret key and the other's public key, which the authenticated link already proved.
Each payload is bound to a context (session, step, direction) so a sealed hidden state
cannot be replayed into another step or echoed back as an answer.
"""

from __future__ import annotations

import struct

from nacl import exceptions as nacl_exceptions
from nacl.public import Box, PrivateKey, PublicKey, SealedBox
from nacl.signing import VerifyKey

from hive_core.base.hoptiming import timed
from hive_core.base.identity import Identity
from hive_core.trust.errors import SealError

OVERHEAD = Box.NONCE_SIZE + 16 + 2  # nonce, Poly1305 MAC, context length


def curve_private(identity: Identity) -> PrivateKey:
    return identity.signing_key.to_curve25519_private_key()


def curve_public(ed25519_public: bytes) -> PublicKey:
    if len(ed25519_public) != 32:
        raise SealError(f"public key must be 32 bytes, got {len(ed25519_public)}")
    try:
        return VerifyKey(ed25519_public).to_curve25519_public_key()
    except (nacl_exceptions.CryptoError, ValueError) as exc:
        raise SealError(f"not a usable Ed25519 public key: {exc}") from None


def box_between(me: Identity, peer_public_key: bytes) -> Box:
    """The shared authenticated box of `me` and the peer (same on both sides)."""
    return Box(curve_private(me), curve_public(peer_public_key))


@timed("sealing")
def seal(box: Box, payload: bytes, context: bytes) -> bytes:
    """Encrypt and authenticate `payload` bound to `context` (a random nonce each time)."""
    if len(context) > 0xFFFF:
        raise SealError("context too long")
    return bytes(box.encrypt(struct.pack("<H", len(context)) + context + payload))


@timed("sealing")
def open_sealed(box: Box, sealed: bytes, context: bytes) -> bytes:
    """Inverse of `seal`; SealError if forged, corrupted, or sealed for another context."""
    try:
        plain = box.decrypt(bytes(sealed))
    except (nacl_exceptions.CryptoError, ValueError) as exc:
        raise SealError(f"payload does not decrypt: {exc}") from None
    if len(plain) < 2:
        raise SealError("payload too short")
    (n,) = struct.unpack_from("<H", plain)
    if plain[2:2 + n] != context:
        raise SealError("payload was sealed for another session or step")
    return plain[2 + n:]


def seal_anonymous(recipient_public_key: bytes, payload: bytes) -> bytes:
    """Encrypt for a node without revealing or proving the sender (SealedBox)."""
    return bytes(SealedBox(curve_public(recipient_public_key)).encrypt(payload))


def open_anonymous(me: Identity, sealed: bytes) -> bytes:
    try:
        return bytes(SealedBox(curve_private(me)).decrypt(bytes(sealed)))
    except (nacl_exceptions.CryptoError, ValueError) as exc:
        raise SealError(f"payload does not decrypt: {exc}") from None

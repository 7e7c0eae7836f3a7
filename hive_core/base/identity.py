"""Node identity: an Ed25519 key pair kept on disk; node id = BLAKE2b-160 of the public key."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from nacl import exceptions as nacl_exceptions
from nacl import signing

from hive_core.base.hoptiming import timed
from hive_core.base.ids import ID_BYTES

KEY_FILE = "node.key"


class IdentityError(ValueError):
    """A key file, public key or signature is malformed or does not verify."""


def node_id_of(public_key: bytes) -> bytes:
    """The node id that a public key proves: BLAKE2b-160 of the raw 32-byte key."""
    if len(public_key) != 32:
        raise IdentityError(f"public key must be 32 bytes, got {len(public_key)}")
    return hashlib.blake2b(public_key, digest_size=ID_BYTES).digest()


@timed("signing")
def verify(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Raise IdentityError unless `signature` is `public_key`'s Ed25519 signature of `message`."""
    if len(public_key) != 32 or len(signature) != 64:
        raise IdentityError("malformed public key or signature")
    try:
        signing.VerifyKey(public_key).verify(message, signature)
    except nacl_exceptions.BadSignatureError as exc:
        raise IdentityError("signature does not verify") from exc


def is_valid(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Boolean form of `verify`."""
    try:
        verify(public_key, message, signature)
    except IdentityError:
        return False
    return True


@dataclass(frozen=True)
class Identity:
    """A node's (or player's) signing key; the node id is derived, never chosen."""

    signing_key: signing.SigningKey

    @classmethod
    def generate(cls) -> Identity:
        return cls(signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """Deterministic identity from a 32-byte seed (tests and simulation)."""
        if len(seed) != 32:
            raise IdentityError("seed must be 32 bytes")
        return cls(signing.SigningKey(seed))

    @classmethod
    def load_or_create(cls, directory: Path) -> Identity:
        """Load `node.key` from `directory`, creating it (mode 0600) on first use."""
        path = Path(directory) / KEY_FILE
        if path.exists():
            seed = path.read_bytes()
            if len(seed) != 32:
                raise IdentityError(f"{path}: key file must hold 32 bytes, holds {len(seed)}")
            return cls.from_seed(seed)
        ident = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(bytes(ident.signing_key))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return ident

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def node_id(self) -> bytes:
        return node_id_of(self.public_key)

    @property
    def node_id_hex(self) -> str:
        return self.node_id.hex()

    @timed("signing")
    def sign(self, message: bytes) -> bytes:
        """Detached 64-byte Ed25519 signature."""
        return self.signing_key.sign(message).signature

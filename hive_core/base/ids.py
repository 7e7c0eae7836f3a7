"""Sizes and helpers for the ids every layer passes around."""

from __future__ import annotations

import os

ID_BYTES = 20  # node ids and DHT keys: BLAKE2b-160 of a public key or a name, as in Kademlia
KEY_BYTES = 32  # Ed25519 public keys
SIGNATURE_BYTES = 64  # Ed25519 signatures
SESSION_BYTES = 16  # an inference session: random, chosen by the asker


def new_session_id() -> bytes:
    """A fresh random session id."""
    return os.urandom(SESSION_BYTES)



def short(node_id: bytes) -> str:
    """The first 12 hex digits of an id: how logs and messages name a node."""
    return node_id.hex()[:12]

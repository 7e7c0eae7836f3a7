"""Identities persist, ids derive from keys, and forged signatures are refused."""

import pytest

from hive_core.base.identity import Identity, IdentityError, is_valid, node_id_of, verify


def test_identity_persists_and_id_is_hash_of_key(tmp_path) -> None:
    a = Identity.load_or_create(tmp_path)
    b = Identity.load_or_create(tmp_path)
    assert a.public_key == b.public_key
    assert a.node_id == node_id_of(a.public_key)
    assert len(a.node_id) == 20
    assert (tmp_path / "node.key").stat().st_mode & 0o777 == 0o600


def test_signature_checks() -> None:
    a, b = Identity.generate(), Identity.generate()
    sig = a.sign(b"join")
    verify(a.public_key, b"join", sig)
    assert not is_valid(b.public_key, b"join", sig)
    assert not is_valid(a.public_key, b"joim", sig)
    with pytest.raises(IdentityError):
        verify(a.public_key[:5], b"join", sig)


def test_corrupt_key_file_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "node.key").write_bytes(b"short")
    with pytest.raises(IdentityError, match="32 bytes"):
        Identity.load_or_create(tmp_path)

"""Trust: Merkle proofs, attestations, sealing (evidence and comparison: test_evidence.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from hive_core.base.identity import Identity
from hive_core.base.stage import Part
from hive_core.trust import (
    SealError,
    TrustError,
    attest,
    box_between,
    check_attestation,
    merkle_root,
    open_anonymous,
    open_sealed,
    prove,
    seal,
    seal_anonymous,
    verify_chunk,
)

IDS = [Identity.from_seed(bytes([i]) * 32) for i in range(1, 6)]
SESSION = b"s" * 16


@pytest.mark.parametrize("size", [0, 1, 4096, 4097, 3 * 4096 + 5, 7 * 4096])
def test_every_chunk_proves_and_tampering_fails(size: int) -> None:
    data = bytes(np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8))
    root = merkle_root(data)
    n = max(1, -(-size // 4096))
    for i in range(n):
        chunk = data[i * 4096:(i + 1) * 4096]
        verify_chunk(root, chunk, prove(data, i))
        with pytest.raises(TrustError):
            verify_chunk(root, chunk + b"x", prove(data, i))
    if size:
        flipped = bytearray(data)
        flipped[-1] ^= 1
        assert merkle_root(bytes(flipped)) != root


def test_proof_for_other_index_fails() -> None:
    data = bytes(np.arange(3 * 4096, dtype=np.uint16).tobytes())
    with pytest.raises(TrustError):
        verify_chunk(merkle_root(data), data[:4096], prove(data, 1))


KERNEL = "packed/avx512/AVX512/t2/2.13.0"


def _att(ident: Identity, out: np.ndarray, inp: bytes = b"input") -> object:
    return attest(ident, session_id=SESSION, step=3, layer_start=0, layer_end=4, part=Part.FULL,
                  position=7, tokens=out.shape[0], input_bytes=inp, output_bytes=out.tobytes(),
                  model=bytes(32), kv=1, kernel=KERNEL)


def test_attestation_signature_root_and_kernel_class() -> None:
    out = np.ones((2, 8), dtype="<f4")
    att = _att(IDS[0], out)
    check_attestation(att, out.tobytes())
    with pytest.raises(TrustError, match="signed root"):
        check_attestation(att, (out * 2).tobytes())
    with pytest.raises(TrustError, match="signature"):
        check_attestation(replace(att, step=4))
    # The kernel class and the model are signed too: a relabelled statement is forged.
    with pytest.raises(TrustError, match="signature"):
        check_attestation(replace(att, kernel="packed/int4/AVX512/t2/2.13.0"))
    with pytest.raises(TrustError, match="signature"):
        check_attestation(replace(att, model=b"m" * 32))
    forged = attest(IDS[0], session_id=SESSION, step=3, layer_start=0, layer_end=4,
                    part=Part.FULL, position=7, tokens=2, input_bytes=b"i",
                    output_bytes=out.tobytes(), model=bytes(32), kv=1, kernel="gpu/magic")
    with pytest.raises(TrustError, match="kernel class"):
        check_attestation(forged)


def test_seal_roundtrip_and_binding() -> None:
    client, server, other = IDS[0], IDS[1], IDS[2]
    a = box_between(client, server.public_key)
    b = box_between(server, client.public_key)
    sealed = seal(a, b"hidden states", b"ctx1")
    assert b"hidden states" not in sealed
    assert open_sealed(b, sealed, b"ctx1") == b"hidden states"
    with pytest.raises(SealError, match="another session"):
        open_sealed(b, sealed, b"ctx2")
    with pytest.raises(SealError, match="decrypt"):
        open_sealed(box_between(other, client.public_key), sealed, b"ctx1")
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    with pytest.raises(SealError):
        open_sealed(b, bytes(tampered), b"ctx1")
    anon = seal_anonymous(server.public_key, b"x")
    assert open_anonymous(server, anon) == b"x"
    with pytest.raises(SealError):
        open_anonymous(other, anon)
    with pytest.raises(SealError):
        box_between(client, b"short")

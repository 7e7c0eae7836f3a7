"""Trust: Merkle proofs, attestations, tolerance verdicts, evidence, sealing."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from hive_core.base.identity import Identity
from hive_core.base.stage import Part
from hive_core.protocol import decode, encode
from hive_core.trust import (
    EvidenceError,
    ReputationBook,
    SealError,
    TrustError,
    attest,
    box_between,
    check_attestation,
    judge,
    load_evidence,
    make_evidence,
    merkle_root,
    open_anonymous,
    open_sealed,
    prove,
    relative_error,
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


def _att(ident: Identity, out: np.ndarray, inp: bytes = b"input") -> object:
    return attest(ident, session_id=SESSION, step=3, layer_start=0, layer_end=4, part=Part.FULL,
                  position=7, tokens=out.shape[0], input_bytes=inp, output_bytes=out.tobytes())


def test_attestation_signature_and_root() -> None:
    out = np.ones((2, 8), dtype="<f4")
    att = _att(IDS[0], out)
    check_attestation(att, out.tobytes())
    with pytest.raises(TrustError, match="signed root"):
        check_attestation(att, (out * 2).tobytes())
    with pytest.raises(TrustError, match="signature"):
        check_attestation(replace(att, step=4))


def test_judge_tolerates_rounding_but_not_noise() -> None:
    rng = np.random.default_rng(0)
    base = rng.standard_normal((3, 64)).astype("<f4")
    rounding = base * (1 + 1e-6)
    noisy = base + rng.standard_normal(base.shape).astype("<f4") * 0.1
    assert relative_error(base, rounding) < 1e-5
    v = judge({b"a": base, b"b": noisy, b"c": rounding})
    assert v.agreeing == (b"a", b"c") and v.outliers == (b"b",) and v.quorum
    v2 = judge({b"a": base, b"b": noisy})
    assert not v2.quorum
    assert relative_error(base, base[:2]) == float("inf")
    nan = base.copy()
    nan[0, 0] = np.nan
    assert judge({b"a": base, b"b": nan, b"c": base}).outliers == (b"b",)


def test_evidence_slashes_and_survives_the_wire() -> None:
    rng = np.random.default_rng(1)
    good = rng.standard_normal((2, 16)).astype("<f4")
    bad = good + 1.0
    witnesses = [(_att(IDS[1], good), good.tobytes()), (_att(IDS[2], good), good.tobytes())]
    ev = make_evidence(_att(IDS[0], bad), bad.tobytes(), witnesses)
    book = ReputationBook()
    assert book.slash(ev) == IDS[0].node_id
    assert book.excluded(IDS[0].node_id) and not book.excluded(IDS[1].node_id)
    again = load_evidence(encode(ev))
    assert again == ev
    assert IDS[0].node_id.hex() in book.to_json()


def test_evidence_against_an_honest_node_is_refused() -> None:
    good = np.ones((1, 8), dtype="<f4")
    wit = [(_att(IDS[1], good), good.tobytes()), (_att(IDS[2], good), good.tobytes())]
    with pytest.raises(EvidenceError, match="within tolerance"):
        make_evidence(_att(IDS[0], good * (1 + 1e-7)), (good * (1 + 1e-7)).tobytes(), wit)
    # Statements about another input prove nothing.
    other = [(_att(IDS[1], good, b"other"), good.tobytes()), wit[1]]
    with pytest.raises(EvidenceError, match="same input"):
        make_evidence(_att(IDS[0], good + 5), (good + 5).tobytes(), other)
    # A forged witness output does not match its signed root.
    forged = [(wit[0][0], (good + 5).tobytes()), wit[1]]
    with pytest.raises(EvidenceError, match="does not verify"):
        make_evidence(_att(IDS[0], good + 5), (good + 5).tobytes(), forged)
    with pytest.raises(EvidenceError, match="two witnesses"):
        make_evidence(_att(IDS[0], good + 5), (good + 5).tobytes(), wit[:1])


def test_garbage_evidence_frame_is_a_clear_error() -> None:
    with pytest.raises(ValueError):
        load_evidence(b"\x01\x80garbage")


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


def test_evidence_message_decodes_strictly() -> None:
    good = np.ones((1, 8), dtype="<f4")
    wit = [(_att(IDS[1], good), good.tobytes()), (_att(IDS[2], good), good.tobytes())]
    ev = make_evidence(_att(IDS[0], good + 1), (good + 1).tobytes(), wit)
    frame = encode(ev)
    assert decode(frame) == ev
    with pytest.raises(ValueError):
        decode(frame[:-3])

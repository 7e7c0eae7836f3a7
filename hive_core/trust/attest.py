"""Signing and checking output attestations: a worker's Merkle root bound to its input and to
what computed it (model, layers, KV kind, kernel class)."""

from __future__ import annotations

from dataclasses import replace

from hive_core.base.identity import Identity, IdentityError, node_id_of, verify
from hive_core.base.stage import Part
from hive_core.protocol import encode_struct
from hive_core.protocol.trust import Attestation
from hive_core.trust.errors import TrustError
from hive_core.trust.kernels import parse_class
from hive_core.trust.merkle import merkle_root

ATTEST_CONTEXT = b"cadencia/attest/v2\x00"


def _signed_bytes(att: Attestation) -> bytes:
    return ATTEST_CONTEXT + encode_struct(replace(att, signature=bytes(64)))


def attest(
    identity: Identity, *, session_id: bytes, step: int, layer_start: int, layer_end: int,
    part: Part, position: int, tokens: int, input_bytes: bytes, output_bytes: bytes,
    model: bytes, kv: int, kernel: str,
) -> Attestation:
    """Sign the Merkle roots of a stage's input and output, and what computed the output."""
    unsigned = Attestation(
        worker_key=identity.public_key, session_id=session_id, step=step,
        layer_start=layer_start, layer_end=layer_end, part=Part(part), position=position,
        tokens=tokens, input_digest=merkle_root(input_bytes),
        output_root=merkle_root(output_bytes), model=model, kv=kv, kernel=kernel,
        signature=bytes(64),
    )
    return replace(unsigned, signature=identity.sign(_signed_bytes(unsigned)))


def worker_id(att: Attestation) -> bytes:
    return node_id_of(att.worker_key)


def check_attestation(att: Attestation, output_bytes: bytes | None = None) -> None:
    """Raise TrustError unless the signature holds, the kernel class is one we know, and
    `output_bytes` (if given) has the signed root."""
    try:
        verify(att.worker_key, _signed_bytes(att), att.signature)
    except IdentityError as exc:
        raise TrustError(f"attestation of {worker_id(att).hex()[:12]}: {exc}") from None
    parse_class(att.kernel)
    if output_bytes is not None and merkle_root(output_bytes) != att.output_root:
        raise TrustError(f"output of {worker_id(att).hex()[:12]} does not match its signed root")


def same_task(a: Attestation, b: Attestation) -> bool:
    """Whether two attestations are about the same computation on the same input (their
    kernel classes may differ)."""
    return (a.session_id, a.step, a.layer_start, a.layer_end, a.part, a.position, a.tokens,
            a.input_digest, a.model, a.kv) == (
        b.session_id, b.step, b.layer_start, b.layer_end, b.part, b.position, b.tokens,
        b.input_digest, b.model, b.kv)

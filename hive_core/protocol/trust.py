"""Trust wire types (tags 0x80-0x9F): signed output attestations and slashing evidence."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated

from hive_core.base.codec import Nested, message, wire_struct
from hive_core.base.fields import Blob, EnumOf, Fixed, Float, ListOf, UInt
from hive_core.base.ids import SESSION_BYTES
from hive_core.base.stage import Part

DIGEST_BYTES = 32
MAX_EVIDENCE_OUTPUT = 4 * 1024 * 1024  # one stage output kept as evidence (float32 bytes)
MAX_WITNESSES = 8


class TrustMsgType(IntEnum):
    """Tags of the trust messages."""

    EVIDENCE = 0x80


@wire_struct
@dataclass(frozen=True)
class Attestation:
    """A worker's signed statement: "for this input, my stage output has this Merkle root"."""

    worker_key: Annotated[bytes, Fixed(32)]  # Ed25519 key of the signer; its hash is the node id
    session_id: Annotated[bytes, Fixed(SESSION_BYTES)]
    step: Annotated[int, UInt(4)]  # the client's forward-pass counter within the session
    layer_start: Annotated[int, UInt(2)]
    layer_end: Annotated[int, UInt(2)]  # exclusive
    part: Annotated[Part, EnumOf(Part)]
    position: Annotated[int, UInt(4)]  # first sequence position of the input
    tokens: Annotated[int, UInt(4)]  # rows of the input (and output) hidden states
    input_digest: Annotated[bytes, Fixed(DIGEST_BYTES)]  # Merkle root of the input bytes
    output_root: Annotated[bytes, Fixed(DIGEST_BYTES)]  # Merkle root of the output bytes
    signature: Annotated[bytes, Fixed(64)]  # over ATTEST_CONTEXT + the fields above


@message(TrustMsgType.EVIDENCE)
@dataclass(frozen=True)
class SlashEvidence:
    """Proof that `offender` signed an output that disagrees with agreeing witnesses.

    Anyone can check it: the signatures, that each output hashes to its signed root, that
    all statements are about the same input, and the distance against `rtol`.
    """

    offender: Annotated[Attestation, Nested(Attestation)]
    offender_output: Annotated[bytes, Blob(MAX_EVIDENCE_OUTPUT)]  # float32 little-endian
    witnesses: Annotated[tuple[Attestation, ...], ListOf(Nested(Attestation), MAX_WITNESSES)]
    witness_outputs: Annotated[tuple[bytes, ...], ListOf(Blob(MAX_EVIDENCE_OUTPUT), MAX_WITNESSES)]
    rtol: Annotated[float, Float()]  # relative L2 tolerance the verdict used

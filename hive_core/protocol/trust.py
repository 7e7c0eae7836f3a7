"""Trust wire types (tags 0x80-0x9F): signed output attestations and replayable slashing evidence."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated

from hive_core.base.codec import Nested, message, wire_struct
from hive_core.base.errors import ProtocolError
from hive_core.base.fields import Blob, EnumOf, Fixed, ListOf, Text, UInt
from hive_core.base.ids import SESSION_BYTES
from hive_core.base.stage import Part

DIGEST_BYTES = 32
MAX_KERNEL_CLASS = 64  # bytes of a kernel class label ("packed/avx512/AVX512/t2/2.13.0")
MAX_EVIDENCE_OUTPUT = 512 * 1024  # the disputed step's output (float32 bytes)
MAX_EVIDENCE_STEPS = 1024  # steps of one stage a piece of evidence replays
MAX_EVIDENCE_INPUT = 3 * 1024 * 1024  # all the inputs those steps took, together
# A whole piece of evidence, encoded: the feed carries up to 4 MiB of it in chunks.
MAX_EVIDENCE_BYTES = 4 * 1024 * 1024
MAX_WITNESSES = 8  # replicas a verdict names as agreeing (the feed's list)


class TrustMsgType(IntEnum):
    """Tags of the trust messages."""

    EVIDENCE = 0x80


@wire_struct
@dataclass(frozen=True)
class Attestation:
    """A worker's signed statement: "for this input, my stage output has this Merkle root".

    It names everything a third party needs to recompute the step: the model file (its
    digest), the layers, the KV cache kind and the kernel class that computed it.
    """

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
    model: Annotated[bytes, Fixed(DIGEST_BYTES)]  # digest of the GGUF file the weights came from
    kv: Annotated[int, UInt(1)]  # the KV cache kind (`inference.KvKind`): it changes the output
    kernel: Annotated[str, Text(MAX_KERNEL_CLASS)]  # kernel class (`hive_core.trust.kernels`)
    signature: Annotated[bytes, Fixed(64)]  # over ATTEST_CONTEXT + the fields above


@message(TrustMsgType.EVIDENCE)
@dataclass(frozen=True)
class SlashEvidence:
    """Proof that `offender` signed an output that its own inputs do not give.

    `steps` are the offender's signed statements for one stage of one session, in the
    order it served them (from the first step that filled its KV cache), the last one being
    the disputed step; `inputs` are their input bytes, each hashing to the statement's
    `input_digest`. Anyone holding the model recomputes the steps in order and compares the
    last output with `output` (`hive_core.trust.check_evidence`): no witness and no
    tolerance is taken from the accuser.
    """

    steps: Annotated[tuple[Attestation, ...], ListOf(Nested(Attestation), MAX_EVIDENCE_STEPS)]
    inputs: Annotated[tuple[bytes, ...], ListOf(Blob(MAX_EVIDENCE_INPUT), MAX_EVIDENCE_STEPS)]
    output: Annotated[bytes, Blob(MAX_EVIDENCE_OUTPUT)]  # the disputed step's float32 output
    reason: Annotated[str, Text(128)] = ""  # for people: how the accuser caught it

    def __post_init__(self) -> None:
        if not self.steps:
            raise ProtocolError("evidence needs at least the disputed step")
        if len(self.inputs) != len(self.steps):
            raise ProtocolError(f"evidence has {len(self.steps)} steps but "
                                f"{len(self.inputs)} inputs")
        if sum(len(i) for i in self.inputs) > MAX_EVIDENCE_INPUT:
            raise ProtocolError("evidence inputs exceed "
                                f"{MAX_EVIDENCE_INPUT // (1024 * 1024)} MiB")

    @property
    def offender(self) -> Attestation:
        """The disputed statement (the last step)."""
        return self.steps[-1]

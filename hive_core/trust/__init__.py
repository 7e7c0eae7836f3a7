"""Trust: Merkle roots over tensor chunks, signed attestations, replica agreement with a
tolerance, slashing with kept evidence, and end-to-end encryption of hop payloads."""

from hive_core.trust.attest import attest, check_attestation, same_task, worker_id
from hive_core.trust.compare import DEFAULT_RTOL, Verdict, agree, judge, relative_error
from hive_core.trust.errors import EvidenceError, SealError, TrustError
from hive_core.trust.merkle import Proof, merkle_root, prove, verify_chunk
from hive_core.trust.reputation import (
    ReputationBook,
    check_evidence,
    load_evidence,
    make_evidence,
)
from hive_core.trust.seal import box_between, open_anonymous, open_sealed, seal, seal_anonymous

__all__ = [
    "DEFAULT_RTOL",
    "EvidenceError",
    "Proof",
    "ReputationBook",
    "SealError",
    "TrustError",
    "Verdict",
    "agree",
    "attest",
    "box_between",
    "check_attestation",
    "check_evidence",
    "judge",
    "load_evidence",
    "make_evidence",
    "merkle_root",
    "open_anonymous",
    "open_sealed",
    "prove",
    "relative_error",
    "same_task",
    "seal",
    "seal_anonymous",
    "verify_chunk",
    "worker_id",
]

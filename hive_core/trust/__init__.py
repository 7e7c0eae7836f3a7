"""Trust: Merkle roots over tensor chunks, signed attestations naming their kernel class,
per-row replica agreement, evidence anyone can replay, reputation with persisted verdicts
and bans, and end-to-end encryption of hop payloads."""

from hive_core.trust.attest import attest, check_attestation, same_task, worker_id
from hive_core.trust.compare import Verdict, agree, agree_classes, judge, row_errors
from hive_core.trust.errors import Cleared, EvidenceError, SealError, TrustError
from hive_core.trust.evidence import (
    Replayed,
    Replayer,
    ReplayJob,
    check_evidence,
    evidence_digest,
    load_evidence,
    make_evidence,
    outside_audit,
    process_replayer,
    use_replayer,
)
from hive_core.trust.kernels import (
    KernelClass,
    audit_tolerance,
    exact,
    parse_class,
    row_tolerance,
)
from hive_core.trust.merkle import Proof, merkle_root, prove, verify_chunk
from hive_core.trust.reputation import ReputationBook
from hive_core.trust.seal import box_between, open_anonymous, open_sealed, seal, seal_anonymous
from hive_core.trust.store import Ban, StoredVerdict, VerdictStore

__all__ = [
    "Ban",
    "Cleared",
    "EvidenceError",
    "KernelClass",
    "Proof",
    "ReplayJob",
    "Replayed",
    "Replayer",
    "ReputationBook",
    "SealError",
    "StoredVerdict",
    "TrustError",
    "Verdict",
    "VerdictStore",
    "agree",
    "agree_classes",
    "attest",
    "audit_tolerance",
    "box_between",
    "check_attestation",
    "check_evidence",
    "evidence_digest",
    "exact",
    "judge",
    "load_evidence",
    "make_evidence",
    "merkle_root",
    "open_anonymous",
    "open_sealed",
    "outside_audit",
    "parse_class",
    "process_replayer",
    "prove",
    "row_errors",
    "row_tolerance",
    "same_task",
    "seal",
    "seal_anonymous",
    "use_replayer",
    "verify_chunk",
    "worker_id",
]

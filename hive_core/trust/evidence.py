"""Slashing evidence anyone holding the model can replay: the offender's own signed steps and inputs.

The accuser bundles the offender's attestations for one stage of one session, in the order
it served them, with their inputs (`make_evidence`). `check_evidence` checks every
signature and input digest, recomputes the steps in order with a `Replayer` (the checker's
own copy of the model's layers), and convicts only if the signed output is not what those
inputs give: bit for bit when the checker computed in the offender's kernel class, within
the calibrated per-row bound of the two classes otherwise. Nothing the accuser writes (no
witness, no tolerance) enters the verdict, so forged or sybil-made evidence proves nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from hive_core.base.stage import Part
from hive_core.protocol import ProtocolError, decode_struct, encode_struct
from hive_core.protocol.trust import MAX_EVIDENCE_BYTES, Attestation, SlashEvidence
from hive_core.trust.attest import check_attestation, worker_id
from hive_core.trust.compare import agree
from hive_core.trust.errors import Cleared, EvidenceError, TrustError
from hive_core.trust.kernels import audit_tolerance, row_tolerance
from hive_core.trust.merkle import merkle_root

MAX_ABS_INPUT = 1e6  # inputs beyond this are refused: no framing by float overflow


@dataclass(frozen=True)
class ReplayJob:
    """Steps of one stage to recompute in order from an empty KV cache."""

    model: bytes  # digest of the GGUF file
    layer_start: int
    layer_end: int
    part: Part
    kv: int  # KvKind
    kernel: str  # the offender's kernel class: a replayer that can compute in it does
    steps: tuple[tuple[int, int, bytes], ...]  # (position, tokens, float32 input bytes)


@dataclass(frozen=True)
class Replayed:
    """The recomputed output of the last step and the kernel class that computed it."""

    output: bytes
    kernel: str


class Replayer(Protocol):
    """Recomputes stage steps on this node's own copy of a model (`hive_core.exec.replay`)."""

    def replay(self, job: ReplayJob) -> Replayed:
        """Raise EvidenceError when the model or the stage cannot be computed here."""
        ...


_process_replayer: Replayer | None = None


def use_replayer(replayer: Replayer) -> None:
    """Make `replayer` the one `check_evidence` uses when given none: this process's own copy
    of its models (a node that loads a model for asking or serving registers it)."""
    global _process_replayer
    _process_replayer = replayer


def process_replayer() -> Replayer | None:
    return _process_replayer


def make_evidence(steps: list[tuple[Attestation, bytes]], output: bytes,
                  reason: str = "") -> SlashEvidence:
    """Bundle the offender's signed steps (attestation, input bytes) up to the disputed one
    (last) and its output; `check_evidence` decides whether it proves anything."""
    try:
        return SlashEvidence(tuple(a for a, _ in steps), tuple(i for _, i in steps), output,
                             reason[:128])
    except ProtocolError as exc:
        raise EvidenceError(f"cannot bundle evidence: {exc}") from None


def evidence_digest(ev: SlashEvidence) -> bytes:
    """The 32-byte name of a piece of evidence (what verdict records point to)."""
    return hashlib.blake2b(encode_struct(ev), digest_size=32).digest()


def _rows(data: bytes, tokens: int, what: str) -> np.ndarray:
    if tokens < 1 or len(data) % (4 * tokens):
        raise EvidenceError(f"{what}: {len(data)} bytes do not hold {tokens} float32 rows")
    return np.frombuffer(data, dtype="<f4").reshape(tokens, -1)


def _check_structure(ev: SlashEvidence) -> tuple[Attestation, int]:
    """The disputed statement and the hidden size, once everything but the math checks."""
    last = ev.offender
    key = (last.worker_key, last.session_id, last.layer_start, last.layer_end, last.part,
           last.model, last.kv, last.kernel)
    hidden = 0
    end = 0
    for k, (att, data) in enumerate(zip(ev.steps, ev.inputs, strict=True)):
        try:
            check_attestation(att, ev.output if k == len(ev.steps) - 1 else None)
        except TrustError as exc:
            raise EvidenceError(f"evidence does not verify: {exc}") from None
        if (att.worker_key, att.session_id, att.layer_start, att.layer_end, att.part,
                att.model, att.kv, att.kernel) != key:
            raise EvidenceError("evidence mixes statements about different tasks or signers")
        if merkle_root(data) != att.input_digest:
            raise EvidenceError(f"input {k} is not the one the offender signed for")
        rows = _rows(data, att.tokens, f"input {k}")
        if not np.isfinite(rows).all() or float(np.abs(rows).max()) > MAX_ABS_INPUT:
            raise EvidenceError(f"input {k} holds values no honest hop carries")
        if hidden and rows.shape[1] != hidden:
            raise EvidenceError("inputs of different widths")
        hidden = rows.shape[1]
        if last.part.has_attention:
            if k == 0 and att.position != 0:
                raise EvidenceError("the replayed steps must start from an empty cache")
            if att.position > end:
                raise EvidenceError(f"step {k} starts at {att.position}, past the "
                                    f"{end} positions its cache held")
            end = att.position + att.tokens
    if _rows(ev.output, last.tokens, "output").shape[1] != hidden:
        raise EvidenceError("the output is not as wide as the inputs")
    return last, hidden


def check_evidence(ev: SlashEvidence, replayer: Replayer | None = None) -> bytes:
    """The offender's node id if `ev` proves it signed a wrong output; `Cleared` when the
    recomputation gives its output (it was honest); EvidenceError otherwise (malformed,
    forged, or not recomputable here). Without `replayer`, this process's own
    (`use_replayer`) recomputes it."""
    last, _ = _check_structure(ev)
    replayer = replayer or _process_replayer
    if replayer is None:
        raise EvidenceError("evidence is only believed once recomputed, and this node holds "
                            "no model to recompute it with")
    steps = ev.steps if last.part.has_attention else ev.steps[-1:]
    inputs = ev.inputs if last.part.has_attention else ev.inputs[-1:]
    job = ReplayJob(last.model, last.layer_start, last.layer_end, last.part, last.kv,
                    last.kernel, tuple((a.position, a.tokens, i)
                                       for a, i in zip(steps, inputs, strict=True)))
    again = replayer.replay(job)
    try:
        tolerance = row_tolerance(last.kernel, again.kernel)
    except TrustError as exc:
        raise EvidenceError(f"cannot judge: {exc}") from None
    theirs = _rows(ev.output, last.tokens, "output")
    mine = _rows(again.output, last.tokens, "recomputed output")
    if agree(theirs, mine, tolerance):
        how = "bit for bit" if tolerance == 0 else f"within {tolerance:.1e} per row"
        raise Cleared(f"the offender's output is what its inputs give ({how})")
    return worker_id(last)


def outside_audit(worker_rows: np.ndarray, worker_kernel: str, audit_rows: np.ndarray,
                  auditor_kernel: str) -> np.ndarray:
    """Indices of the rows a worker computed step by step that a one-prefill audit of the same
    inputs puts outside the honest bound (prefill and step-by-step differ in rounding)."""
    from hive_core.trust.compare import row_errors

    tol = audit_tolerance(worker_kernel, auditor_kernel)
    return np.flatnonzero(~(row_errors(worker_rows, audit_rows) <= tol))


def load_evidence(body: bytes) -> SlashEvidence:
    """Decode stored or gossiped evidence (`encode_struct` of a SlashEvidence) and check its
    structure and signatures (EvidenceError otherwise); `check_evidence` it before believing it."""
    try:
        ev = decode_struct(body, SlashEvidence, MAX_EVIDENCE_BYTES)
    except ProtocolError as exc:
        raise EvidenceError(f"not evidence: {exc}") from None
    _check_structure(ev)
    return ev

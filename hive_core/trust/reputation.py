"""Slashing and reputation: verified evidence cuts a node's score and keeps it out of plans.

A node is only ever slashed on evidence that anyone can re-check (`check_evidence`), and
the evidence is kept (`ReputationBook.evidence`, serialisable with the wire codec).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from hive_core.protocol import decode, encode_struct
from hive_core.protocol.trust import MAX_EVIDENCE_OUTPUT, Attestation, SlashEvidence
from hive_core.trust.attest import check_attestation, same_task, worker_id
from hive_core.trust.compare import DEFAULT_RTOL, agree
from hive_core.trust.errors import EvidenceError, TrustError

SLASH_FACTOR = 0.25  # a proven lie keeps a quarter of the score
EXCLUDE_BELOW = 0.5  # nodes under this score are left out of plans
REWARD_STEP = 0.01  # each verified answer earns back a little, up to 1.0


def _as_array(data: bytes, att: Attestation) -> np.ndarray:
    arr = np.frombuffer(data, dtype="<f4")
    if att.tokens == 0 or arr.size % att.tokens:
        raise EvidenceError("output size does not match the attested token count")
    return arr.reshape(att.tokens, -1)


def make_evidence(
    offender: Attestation, offender_output: bytes,
    witnesses: list[tuple[Attestation, bytes]], rtol: float = DEFAULT_RTOL,
) -> SlashEvidence:
    """Bundle a verdict; `check_evidence` is run on it before it is returned."""
    ev = SlashEvidence(offender, offender_output, tuple(a for a, _ in witnesses),
                       tuple(o for _, o in witnesses), float(rtol))
    check_evidence(ev)
    return ev


def check_evidence(ev: SlashEvidence) -> bytes:
    """Raise EvidenceError unless `ev` proves its offender wrong; returns the offender id."""
    if len(ev.witnesses) < 2 or len(ev.witnesses) != len(ev.witness_outputs):
        raise EvidenceError("evidence needs at least two witnesses, each with its output")
    if not 0 < ev.rtol < 1:
        raise EvidenceError(f"tolerance {ev.rtol} out of range")
    bad = worker_id(ev.offender)
    try:
        check_attestation(ev.offender, ev.offender_output)
        for att, out in zip(ev.witnesses, ev.witness_outputs, strict=True):
            check_attestation(att, out)
    except TrustError as exc:
        raise EvidenceError(f"evidence does not verify: {exc}") from None
    ids = {worker_id(a) for a in ev.witnesses}
    if len(ids) != len(ev.witnesses) or bad in ids:
        raise EvidenceError("witnesses must be distinct nodes other than the offender")
    if not all(same_task(ev.offender, a) for a in ev.witnesses):
        raise EvidenceError("statements are not about the same input and stage")
    outs = [_as_array(o, a) for a, o in zip(ev.witnesses, ev.witness_outputs, strict=True)]
    if not all(agree(outs[0], o, ev.rtol) for o in outs[1:]):
        raise EvidenceError("witnesses do not agree with each other")
    theirs = _as_array(ev.offender_output, ev.offender) if ev.offender_output else None
    if theirs is not None and agree(outs[0], theirs, ev.rtol):
        raise EvidenceError("the offender's output is within tolerance of the witnesses")
    return bad


@dataclass
class ReputationBook:
    """Scores in [0, 1] per node id, the evidence behind every cut, and who is excluded."""

    scores: dict[bytes, float] = field(default_factory=dict)
    evidence: list[SlashEvidence] = field(default_factory=list)
    slashed: list[bytes] = field(default_factory=list)  # in the order they were caught

    def score(self, node_id: bytes) -> float:
        return self.scores.get(node_id, 1.0)

    def excluded(self, node_id: bytes) -> bool:
        return self.score(node_id) < EXCLUDE_BELOW

    def reward(self, node_id: bytes) -> None:
        self.scores[node_id] = min(1.0, self.score(node_id) + REWARD_STEP)

    def slash(self, ev: SlashEvidence) -> bytes:
        """Check `ev`, cut its offender's score, keep the evidence; returns the offender."""
        bad = check_evidence(ev)
        self.scores[bad] = self.score(bad) * SLASH_FACTOR
        self.evidence.append(ev)
        if bad not in self.slashed:
            self.slashed.append(bad)
        return bad

    def export(self) -> list[bytes]:
        """Each piece of evidence as a wire frame body (store it, gossip it, re-check it)."""
        return [encode_struct(ev) for ev in self.evidence]

    def to_json(self) -> str:
        return json.dumps({
            "scores": {k.hex(): round(v, 4) for k, v in sorted(self.scores.items())},
            "slashed": [k.hex() for k in self.slashed],
            "evidence": len(self.evidence),
        })


def load_evidence(frame: bytes) -> SlashEvidence:
    """Decode a gossiped EVIDENCE frame and check it (EvidenceError if it proves nothing)."""
    msg = decode(frame)
    if not isinstance(msg, SlashEvidence):
        raise EvidenceError(f"expected slashing evidence, got {type(msg).__name__}")
    if len(msg.offender_output) > MAX_EVIDENCE_OUTPUT:
        raise EvidenceError("offender output too large")
    check_evidence(msg)
    return msg

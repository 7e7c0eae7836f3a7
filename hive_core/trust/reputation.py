"""Reputation: checked evidence convicts a node for good, silence bans it for a while.

A node is slashed only on evidence this node recomputed itself (`check_evidence`); the
evidence and the verdict are kept (in the data directory when the book has a store) and
published, so other nodes can check it too. A node that takes work and never answers is
banned with exponential backoff (`BAN_BASE_S` doubling to `BAN_MAX_S`, as Petals does). A
slashed or banned node is left out of plans.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

from hive_core.protocol import encode_struct
from hive_core.protocol.trust import SlashEvidence
from hive_core.trust.evidence import Replayer, check_evidence, evidence_digest
from hive_core.trust.store import Ban, VerdictStore

logger = logging.getLogger(__name__)

SLASH_FACTOR = 0.25  # a proven lie keeps a quarter of the score
EXCLUDE_BELOW = 0.5  # nodes under this score are left out of plans
REWARD_STEP = 0.01  # each verified answer earns back a little, up to 1.0
BAN_BASE_S = 15.0  # first ban of a silent node
BAN_MAX_S = 3600.0  # bans double up to this


@dataclass
class ReputationBook:
    """Scores in [0, 1] per node id, the evidence behind every conviction, bans, and who is
    left out. With `store`, verdicts and bans persist; `replayer` recomputes evidence."""

    scores: dict[bytes, float] = field(default_factory=dict)
    evidence: list[SlashEvidence] = field(default_factory=list)
    slashed: list[bytes] = field(default_factory=list)  # in the order they were caught
    bans: dict[bytes, Ban] = field(default_factory=dict)
    forfeits: set[tuple[bytes, bytes]] = field(default_factory=set)  # (offender, session)
    store: VerdictStore | None = None
    replayer: Replayer | None = None

    def __post_init__(self) -> None:
        if self.store is None:
            return
        for v in self.store.verdicts():
            if v.offender not in self.slashed:
                self.slashed.append(v.offender)
            self.scores[v.offender] = min(self.score(v.offender), SLASH_FACTOR)
            self.forfeits.add((v.offender, v.session))
        self.bans.update(self.store.bans())

    def score(self, node_id: bytes) -> float:
        return self.scores.get(node_id, 1.0)

    def banned(self, node_id: bytes, now: float | None = None) -> bool:
        ban = self.bans.get(node_id)
        return ban is not None and ban.until > (time.time() if now is None else now)

    def excluded(self, node_id: bytes) -> bool:
        """Left out of plans: convicted, banned now, or scored too low."""
        return (node_id in self.slashed or self.score(node_id) < EXCLUDE_BELOW
                or self.banned(node_id))

    def reward(self, node_id: bytes) -> None:
        self.scores[node_id] = min(1.0, self.score(node_id) + REWARD_STEP)

    def slash(self, ev: SlashEvidence) -> bytes:
        """Recompute `ev` (EvidenceError unless it convicts), cut its offender's score, keep the
        evidence and the verdict; returns the offender."""
        bad = check_evidence(ev, self.replayer)
        self.record(ev, bad)
        return bad

    def record(self, ev: SlashEvidence, bad: bytes) -> None:
        """Keep a verdict already checked by `check_evidence` (by this node)."""
        self.scores[bad] = self.score(bad) * SLASH_FACTOR
        self.evidence.append(ev)
        if bad not in self.slashed:
            self.slashed.append(bad)
        session = ev.offender.session_id
        self.forfeits.add((bad, session))
        if self.store is not None:
            self.store.add_verdict(evidence_digest(ev), bad, session, ev.reason,
                                   encode_struct(ev))

    def distrust(self, node_id: bytes) -> None:
        """Cut a score without evidence (a majority outvoted it, nothing recomputed): it is
        left out here for now, and nothing is published against it."""
        self.scores[node_id] = min(self.score(node_id), EXCLUDE_BELOW * 0.99)

    def ban(self, node_id: bytes, reason: str, now: float | None = None) -> Ban:
        """Leave `node_id` out for BAN_BASE_S, doubling with each strike up to BAN_MAX_S."""
        now = time.time() if now is None else now
        old = self.bans.get(node_id)
        strikes = (old.strikes if old is not None else 0) + 1
        ban = Ban(now + min(BAN_BASE_S * 2 ** (strikes - 1), BAN_MAX_S), strikes, reason)
        self.bans[node_id] = ban
        if self.store is not None:
            self.store.set_ban(node_id, ban)
        logger.info("banned %s for %.0f s (strike %d): %s", node_id.hex()[:12],
                    ban.until - now, strikes, reason)
        return ban

    def export(self) -> list[bytes]:
        """Each piece of evidence as codec bytes (store it, gossip it, re-check it)."""
        return [encode_struct(ev) for ev in self.evidence]

    def to_json(self) -> str:
        now = time.time()
        return json.dumps({
            "scores": {k.hex(): round(v, 4) for k, v in sorted(self.scores.items())},
            "slashed": [k.hex() for k in self.slashed],
            "banned": sorted(k.hex() for k in self.bans if self.banned(k, now)),
            "evidence": len(self.evidence),
        })

"""Verdicts through the DHT: a conviction one asker published is checked (recomputed) by another
before it leaves the liar out; forged, sybil-made or malformed verdicts change nothing.

Adversaries: a framer that publishes a verdict naming an honest node over a liar's real
evidence, a sybil publishing from a key nobody knows, and a vandal storing garbage chunks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from hive_core.base.identity import Identity
from hive_core.base.stage import Stage
from hive_core.exec import ClientConfig, Fault, generate_hive
from hive_core.exec.board import VerdictBoard
from hive_core.exec.hive import build_hive
from hive_core.mesh.dht.records import (
    EvidenceChunkRecord,
    VerdictKind,
    VerdictRecord,
    keys_for,
    make_record,
    verify_record,
)
from hive_core.protocol import SignedRecord
from hive_core.trust import ReputationBook, VerdictStore, evidence_digest

PROMPT = [5, 9, 12, 7, 5, 9, 12, 33, 40, 11, 3]


@dataclass
class FakeDht:
    """The part of a DHT the board uses: signed records stored by key, checked on the way in."""

    identity: Identity
    records: dict[bytes, list[SignedRecord]] = field(default_factory=dict)

    async def publish(self, value: Any) -> list[SignedRecord]:
        return [self.put(make_record(self.identity, key, value, seq=1, ttl_s=600,
                                     now_s=time.time())) for key in keys_for(value, b"")]

    def put(self, record: SignedRecord) -> SignedRecord:
        verify_record(record, time.time())
        self.records.setdefault(record.key, []).append(record)
        return record

    async def get(self, key: bytes) -> list[SignedRecord]:
        return list(self.records.get(key, []))


@dataclass
class FakeHive:
    dht: FakeDht


async def test_a_published_conviction_is_recomputed_before_anyone_follows_it(
        tiny_gguf, tiny_file, tmp_path, caplog) -> None:
    hive = await build_hive(tiny_gguf, 4, replicas=2, model=tiny_file,
                            stages=[Stage(0, 2), Stage(2, 4)], faults={3: Fault.parse("noise")},
                            client_config=ClientConfig(local_layers=0, local_tail_layers=0,
                                                       hedge_floor_s=60.0))
    dht = FakeDht(hive.asker.identity)
    board = VerdictBoard(FakeHive(dht), hive.client.reputation)
    board.attach(hive.client)
    liar, honest = hive.servers[3].node.node_id, hive.servers[2].node.node_id
    try:
        s = hive.client.new_session()
        await asyncio.wait_for(generate_hive(s, PROMPT, max_new_tokens=4, context_length=64), 60)
        await s.finish()  # waits for the publication too
    finally:
        await hive.close()
    [ev] = hive.client.reputation.evidence
    digest = evidence_digest(ev)
    # Another node (its own data dir, nothing known yet) reviews the candidates of a route.
    other = ReputationBook(store=VerdictStore.in_dir(tmp_path),
                           replayer=hive.client.reputation.replayer)
    with caplog.at_level(logging.INFO, logger="hive_core.exec.board"):
        # A framer reuses the liar's real evidence in a verdict against an honest node; a
        # vandal stores garbage under a digest; a sybil names a digest with no evidence.
        framer = FakeDht(Identity.generate())
        framer.records = dht.records
        await framer.publish(VerdictRecord(honest, ev.offender.session_id, VerdictKind.SLASHED,
                                           digest, 1, 0, "framed"))
        junk = b"j" * 32
        await framer.publish(EvidenceChunkRecord(junk, 0, 1, b"\x00" * 100))
        await framer.publish(VerdictRecord(honest, b"s" * 16, VerdictKind.SLASHED, junk, 1, 0, "junk"))
        await framer.publish(VerdictRecord(honest, b"s" * 16, VerdictKind.SLASHED, b"n" * 32, 2, 0,
                                           "nothing"))
        await framer.publish(VerdictRecord(honest, b"s" * 16, VerdictKind.SILENT, bytes(32), 0,
                                           int(time.time() * 1000) + 10**6, "starve it"))
        left_out = await VerdictBoard(FakeHive(dht), other).review([liar, honest])
    assert left_out == {liar}
    assert other.slashed == [liar] and not other.excluded(honest)
    assert "refused" in caplog.text
    # The check is kept: a later process leaves the liar out without fetching anything.
    later = ReputationBook(store=VerdictStore.in_dir(tmp_path))
    assert later.excluded(liar) and (liar, ev.offender.session_id) in later.forfeits

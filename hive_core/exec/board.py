"""Verdicts through the DHT: publish the ones this node checked, check others' before routing.

A conviction is published as a signed `VerdictRecord` under the offender's verdict key, with
the evidence itself in `EvidenceChunkRecord`s; a ban of a silent node as a `VerdictRecord`
with no evidence. Before routing, `review` reads the verdicts against each candidate,
fetches and recomputes every piece of evidence it has not checked yet, and keeps (and
stores) the ones that convict: those nodes are left out of the plan. Bans published by
others are not evidence and are not followed (any node could publish one to starve an
honest server).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from hive_core.exec.client import HiveClient
from hive_core.mesh.dht.records import (
    EVIDENCE_CHUNK_BYTES,
    EvidenceChunkRecord,
    RecordError,
    VerdictKind,
    VerdictRecord,
    decode_value,
    evidence_key,
    owner_of,
    verdict_key,
)
from hive_core.protocol import encode_struct
from hive_core.protocol.trust import SlashEvidence
from hive_core.trust import (
    Ban,
    EvidenceError,
    ReputationBook,
    check_evidence,
    evidence_digest,
    load_evidence,
)

logger = logging.getLogger(__name__)
PUBLISH_TIMEOUT_S = 15.0


class VerdictBoard:
    """Reads and writes verdicts in the DHT of `hive` (a `HiveNode`) for `reputation`."""

    def __init__(self, hive: Any, reputation: ReputationBook) -> None:
        self.hive = hive
        self.reputation = reputation
        self.pending: set[asyncio.Task[None]] = set()
        self.refused = 0  # verdicts whose evidence did not convict, or could not be fetched

    # -- writing -------------------------------------------------------------------------

    def publish(self, ev: SlashEvidence, offender: bytes) -> None:
        """Publish a conviction this node checked (in the background; `flush` waits)."""
        self._spawn(self._publish(ev, offender))

    def publish_ban(self, node: bytes, ban: Ban) -> None:
        record = VerdictRecord(node, bytes(16), VerdictKind.SILENT, bytes(32), 0,
                               int(ban.until * 1000), ban.reason[:128])
        self._spawn(self._put([record]))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _publish(self, ev: SlashEvidence, offender: bytes) -> None:
        body = encode_struct(ev)
        digest = evidence_digest(ev)
        parts = [body[k:k + EVIDENCE_CHUNK_BYTES] for k in range(0, len(body), EVIDENCE_CHUNK_BYTES)]
        chunks = [EvidenceChunkRecord(digest, k, len(parts), p) for k, p in enumerate(parts)]
        verdict = VerdictRecord(offender, ev.offender.session_id, VerdictKind.SLASHED, digest,
                                len(parts), 0, ev.reason[:128])
        await self._put([*chunks, verdict])

    async def _put(self, values: list[Any]) -> None:
        try:
            await asyncio.wait_for(asyncio.gather(*(self.hive.dht.publish(v) for v in values)),
                                   PUBLISH_TIMEOUT_S)
        except (TimeoutError, ConnectionError, RecordError) as exc:
            logger.warning("verdict not published: %s", exc)

    async def flush(self, timeout: float = PUBLISH_TIMEOUT_S) -> None:
        """Wait for publications still under way (before the node closes)."""
        if self.pending:
            await asyncio.wait(set(self.pending), timeout=timeout)

    def attach(self, client: HiveClient) -> None:
        """Publish what `client` convicts and bans."""
        client.publish = self.publish
        client.publish_ban = self.publish_ban
        client.flushers.append(self.flush)

    # -- reading -------------------------------------------------------------------------

    async def review(self, candidates: Iterable[bytes]) -> set[bytes]:
        """The candidates convicted by evidence this node has checked (now or before)."""
        nodes = list(dict.fromkeys(candidates))
        found = await asyncio.gather(*(self.hive.dht.get(verdict_key(n)) for n in nodes),
                                     return_exceptions=True)
        for node, records in zip(nodes, found, strict=True):
            if isinstance(records, BaseException):
                continue
            for record in records:
                try:
                    value = decode_value(record)
                except RecordError:
                    continue
                if (isinstance(value, VerdictRecord) and value.offender == node
                        and value.kind is VerdictKind.SLASHED):
                    await self._check(value, owner_of(record))
        return {n for n in nodes if n in self.reputation.slashed}

    async def _check(self, verdict: VerdictRecord, publisher: bytes) -> None:
        store = self.reputation.store
        if verdict.offender in self.reputation.slashed or (
                store is not None and store.has(verdict.digest)):
            return
        try:
            ev = await self._fetch(verdict)
            replayer = self.reputation.replayer
            bad = await asyncio.to_thread(check_evidence, ev, replayer)
        except EvidenceError as exc:
            self.refused += 1
            logger.info("verdict of %s against %s refused: %s", publisher.hex()[:12],
                        verdict.offender.hex()[:12], exc)
            return
        if bad != verdict.offender:
            self.refused += 1
            return
        self.reputation.record(ev, bad)
        logger.warning("left out %s: evidence from %s recomputed here convicts it (%s)",
                       bad.hex()[:12], publisher.hex()[:12], verdict.reason)

    async def _fetch(self, verdict: VerdictRecord) -> SlashEvidence:
        found = await asyncio.gather(*(self.hive.dht.get(evidence_key(verdict.digest, k))
                                       for k in range(verdict.chunks)), return_exceptions=True)
        parts: list[bytes] = []
        for k, records in enumerate(found):
            chunk = None if isinstance(records, BaseException) else next(
                (v for v in map(_value, records) if isinstance(v, EvidenceChunkRecord)
                 and v.digest == verdict.digest and v.index == k), None)
            if chunk is None:
                raise EvidenceError(f"evidence chunk {k} of {verdict.chunks} is missing")
            parts.append(chunk.data)
        ev = load_evidence(b"".join(parts))
        if evidence_digest(ev) != verdict.digest:
            raise EvidenceError("the evidence does not match its digest")
        return ev


def _value(record: Any) -> Any:
    try:
        return decode_value(record)
    except RecordError:
        return None

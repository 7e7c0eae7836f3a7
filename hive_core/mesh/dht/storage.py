"""The records a node holds for the DHT: verified on entry, newest seq wins, dropped on expiry."""

from __future__ import annotations

import logging

from hive_core.mesh.dht.records import RecordError, owner_of, verify_record
from hive_core.protocol import MAX_RECORDS, SignedRecord

log = logging.getLogger(__name__)


class RecordStore:
    """Records by key, one per owner; bounded in keys and owners per key."""

    def __init__(self, *, max_keys: int = 100_000, max_per_key: int = MAX_RECORDS) -> None:
        self.max_keys = max_keys
        self.max_per_key = max_per_key
        self._data: dict[bytes, dict[bytes, SignedRecord]] = {}
        self.rejected = 0

    def __len__(self) -> int:
        return sum(len(v) for v in self._data.values())

    def put(self, record: SignedRecord, now_s: float) -> None:
        """Keep `record`, or raise RecordError (logged) if it is forged, stale or unwelcome."""
        try:
            verify_record(record, now_s)
            owners = self._data.get(record.key)
            owner = owner_of(record)
            held = owners.get(owner) if owners else None
            if held is not None:
                if record.seq < held.seq or (record.seq == held.seq and record != held):
                    raise RecordError(f"stale record: seq {record.seq} <= held {held.seq}")
            elif owners is None and len(self._data) >= self.max_keys:
                self.expire(now_s)
                if len(self._data) >= self.max_keys:
                    raise RecordError("record store is full")
            elif owners is not None and len(owners) >= self.max_per_key:
                # make room by dropping the record closest to expiry, if this one outlives it
                soonest = min(owners.values(), key=lambda r: r.expires_at_ms)
                if soonest.expires_at_ms >= record.expires_at_ms:
                    raise RecordError(f"key already holds {self.max_per_key} records")
                del owners[owner_of(soonest)]
        except RecordError as exc:
            self.rejected += 1
            log.warning("refused record from %s: %s", owner_of(record).hex()[:12], exc)
            raise
        self._data.setdefault(record.key, {})[owner] = record

    def get(self, key: bytes, now_s: float) -> list[SignedRecord]:
        """Live records under `key`, newest expiry first."""
        owners = self._data.get(key)
        if not owners:
            return []
        now_ms = now_s * 1000
        live = [r for r in owners.values() if r.expires_at_ms > now_ms]
        return sorted(live, key=lambda r: -r.expires_at_ms)

    def expire(self, now_s: float) -> int:
        """Drop expired records; returns how many."""
        now_ms = now_s * 1000
        dropped = 0
        for key in list(self._data):
            owners = self._data[key]
            for owner in [o for o, r in owners.items() if r.expires_at_ms <= now_ms]:
                del owners[owner]
                dropped += 1
            if not owners:
                del self._data[key]
        return dropped

    def records(self) -> list[SignedRecord]:
        return [r for owners in self._data.values() for r in owners.values()]

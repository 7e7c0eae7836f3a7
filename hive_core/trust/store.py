"""Verdicts and bans kept in the data directory (SQLite), so they outlive one `ask`.

A verdict is a piece of evidence this node checked itself (by recomputing it) and the
offender and session it convicts; a ban is a node left out of plans until a time (silent
or failing nodes, with exponential backoff). Both are read back when a node starts.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

FILE_NAME = "verdicts.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS verdicts (
    digest BLOB PRIMARY KEY, offender BLOB NOT NULL, session BLOB NOT NULL,
    reason TEXT NOT NULL, at REAL NOT NULL, evidence BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS bans (
    node BLOB PRIMARY KEY, until REAL NOT NULL, strikes INTEGER NOT NULL, reason TEXT NOT NULL);
"""


@dataclass(frozen=True)
class StoredVerdict:
    """One checked conviction."""

    digest: bytes  # evidence_digest of the evidence
    offender: bytes  # node id
    session: bytes  # the disputed session (its credits are forfeit)
    reason: str
    at: float  # unix seconds when this node checked it


@dataclass(frozen=True)
class Ban:
    """A node left out of plans until `until` (unix seconds); `strikes` sets the next length."""

    until: float
    strikes: int
    reason: str


class VerdictStore:
    """The verdicts and bans of one data directory (thread-safe, one connection)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    @classmethod
    def in_dir(cls, data_dir: Path | str) -> VerdictStore:
        return cls(Path(data_dir) / FILE_NAME)

    def add_verdict(self, digest: bytes, offender: bytes, session: bytes, reason: str,
                    evidence: bytes, at: float | None = None) -> bool:
        """Keep a checked verdict; False if it was already kept."""
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO verdicts VALUES (?, ?, ?, ?, ?, ?)",
                (digest, offender, session, reason[:256], time.time() if at is None else at,
                 evidence))
            return cur.rowcount == 1

    def has(self, digest: bytes) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM verdicts WHERE digest = ?",
                                    (digest,)).fetchone() is not None

    def verdicts(self) -> list[StoredVerdict]:
        with self._lock:
            rows = self._db.execute(
                "SELECT digest, offender, session, reason, at FROM verdicts ORDER BY at").fetchall()
        return [StoredVerdict(bytes(d), bytes(o), bytes(s), str(r), float(a))
                for d, o, s, r, a in rows]

    def evidence(self, digest: bytes) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT evidence FROM verdicts WHERE digest = ?",
                                   (digest,)).fetchone()
        return None if row is None else bytes(row[0])

    def set_ban(self, node: bytes, ban: Ban) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO bans VALUES (?, ?, ?, ?)",
                             (node, ban.until, ban.strikes, ban.reason[:256]))

    def bans(self) -> dict[bytes, Ban]:
        with self._lock:
            rows = self._db.execute("SELECT node, until, strikes, reason FROM bans").fetchall()
        return {bytes(n): Ban(float(u), int(k), str(r)) for n, u, k, r in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()

"""Persistence: every accepted edit appended to a SQLite file before it is acknowledged."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

from .edit import SignedEdit
from .errors import EditError, StoreError

FILE_NAME = "world.sqlite3"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS edits (
    client INTEGER NOT NULL,   -- Yjs client id of the author
    start INTEGER NOT NULL,    -- clock range [start, end) the edit covers
    end INTEGER NOT NULL,
    data BLOB NOT NULL,        -- the signed edit, as sent on the wire
    PRIMARY KEY (client, start)
) WITHOUT ROWID;
"""


class Store:
    """An append-mostly table of signed edits; compaction rewrites it in one transaction.

    WAL with synchronous=FULL: once `append` returns, the edit survives a kill -9 (and a
    power cut, as far as the disk honours fsync).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not a usable world database ({exc})") from None

    @classmethod
    def in_dir(cls, data_dir: Path) -> Store:
        return cls(Path(data_dir) / FILE_NAME)

    def load(self) -> list[SignedEdit]:
        """Every stored edit, signature checked, in chain order per author."""
        edits = []
        try:
            rows = self._db.execute("SELECT data FROM edits ORDER BY client, start").fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: {exc}") from None
        for (data,) in rows:
            try:
                edit = SignedEdit.parse(data)
                edit.verify()
            except EditError as exc:
                raise StoreError(f"{self.path}: corrupt edit row: {exc}") from None
            edits.append(edit)
        return edits

    def append(self, edit: SignedEdit, covered: Iterable[SignedEdit] = ()) -> None:
        """Durably add `edit`, dropping the rows it covers, in one transaction."""
        with self._tx():
            for old in covered:
                self._db.execute("DELETE FROM edits WHERE client=? AND start=?",
                                 (old.client_id, old.start))
            self._db.execute("INSERT OR REPLACE INTO edits VALUES (?, ?, ?, ?)",
                             (edit.client_id, edit.start, edit.end, bytes(edit)))

    def rewrite(self, edits: Iterable[SignedEdit]) -> None:
        """Replace the whole table (compaction)."""
        with self._tx():
            self._db.execute("DELETE FROM edits")
            self._db.executemany(
                "INSERT INTO edits VALUES (?, ?, ?, ?)",
                ((e.client_id, e.start, e.end, bytes(e)) for e in edits))

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM edits").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def _tx(self) -> _Tx:
        return _Tx(self._db)


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")

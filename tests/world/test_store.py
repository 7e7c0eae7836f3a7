"""Persistence: edits survive a reload and a kill -9; compaction keeps the same city."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from world.model import City, Outcome, StoreError

from .conftest import player

ROOT = Path(__file__).resolve().parents[2]

WRITER = """
import sys
from pathlib import Path
from hive_core.base.identity import Identity
from world.model import City
city = City.open(Path(sys.argv[1]), Identity.from_seed(bytes([9]) * 32))
k = 0
while True:
    b = city.place_building("house", (float(k), 0.0, 0.0))
    city.move(b, (float(k), 1.0, 0.0))
    print("ack", b, k, flush=True)  # acknowledged: both commands returned
    k += 1
"""


def test_reload_holds_every_edit_and_the_edit_log(tmp_path: Path) -> None:
    city = City.open(tmp_path, player(1))
    city.join("alice")
    b = city.place_building("tower", (1.0, 2.0, 3.0))
    city.upgrade(b)
    other = City(player(2))
    other.place_building("park", (0.0, 0.0, 0.0))
    for e in other.edits_since({}):
        assert city.receive(e) is Outcome.ACCEPTED
    view, sv = city.to_json(), city.state_vector()
    city.close()
    again = City.open(tmp_path, player(1))
    assert again.to_json() == view and again.state_vector() == sv
    # It can answer a fresh peer's sync from the reloaded log, the relayed edits included.
    fresh = City(player(3))
    for e in again.edits_since({}):
        assert fresh.receive(e) is Outcome.ACCEPTED
    assert fresh.to_json() == view
    # And it goes on editing from where its clock stopped.
    again.move(b, (5.0, 5.0, 5.0))
    for e in again.edits_since(fresh.state_vector()):
        assert fresh.receive(e) is Outcome.ACCEPTED
    assert fresh.building(b).position == (5.0, 5.0, 5.0)
    again.close()


def test_compaction_merges_own_edits_and_keeps_the_city(tmp_path: Path) -> None:
    city = City.open(tmp_path, player(1))
    ids = [city.place_building("house", (float(k), 0.0, 0.0)) for k in range(300)]
    for b in ids[:50]:
        city.remove(b)
    # 350 own edits: compaction ran once on the way (every 256), and once more by hand.
    assert city._store.count() < 350
    assert city.compact() == 1
    view = city.to_json()
    city.close()
    again = City.open(tmp_path, player(1))
    assert again.to_json() == view and len(again.buildings()) == 250
    fresh = City(player(2))
    partial = City(player(3))
    for e in again.edits_since({}):
        assert fresh.receive(e) is Outcome.ACCEPTED
        assert e.end - e.start > 300  # one merged, re-signed edit
    assert fresh.to_json() == view
    # A peer holding some of the old fragments takes the compacted edit too.
    for e in City(player(1)).edits_since({}):
        partial.receive(e)
    assert partial.receive(again.edits_since({})[0]) is Outcome.ACCEPTED
    assert partial.to_json() == view
    again.close()


def test_corrupt_store_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "world.sqlite3").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable world database"):
        City.open(tmp_path, player(1))


def test_tampered_row_is_a_clear_error(tmp_path: Path) -> None:
    import sqlite3

    city = City.open(tmp_path, player(1))
    city.place_building("house", (0.0, 0.0, 0.0))
    city.close()
    db = sqlite3.connect(tmp_path / "world.sqlite3")
    (data,) = db.execute("SELECT data FROM edits").fetchone()
    db.execute("UPDATE edits SET data = ?", (data[:-1] + bytes([data[-1] ^ 1]),))
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="corrupt edit row"):
        City.open(tmp_path, player(1))


def test_kill_9_loses_no_acknowledged_edit(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, text=True)
    acked: dict[str, float] = {}
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            _, b, k = line.split()
            acked[b] = float(k)
            if len(acked) == 150:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    city = City.open(tmp_path, player(9))
    have = city.buildings()
    for b, k in acked.items():
        assert b in have, f"acknowledged building {b} lost"
        assert have[b].position == (k, 1.0, 0.0)
    # At most the edits in flight at the kill went beyond the last ack.
    assert len(have) <= len(acked) + 1

"""`cadencia world export|import|status` on real data directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pycrdt import Doc, Map

from cadencia.cli import main
from hive_core.base.identity import Identity
from world.model import City

from .jspeer import JsPeer


def _city(directory: Path) -> City:
    return City.open(directory, Identity.load_or_create(directory))


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_export_status_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir()
    b_dir.mkdir()
    city = _city(a_dir)
    city.join("alice")
    b = city.place_building("tower", (1.0, 2.0, 0.0))
    city.close()

    code, out, _ = _run(capsys, "world", "status", "--data-dir", str(a_dir), "--json")
    status = json.loads(out)
    assert code == 0 and status["counts"]["buildings"] == 1
    assert status["state_vector"] == {str(city.client_id): city.state_vector()[city.client_id]}

    yjs, js = tmp_path / "city.bin", tmp_path / "city.json"
    assert _run(capsys, "world", "export", "--data-dir", str(a_dir), "--format", "yjs",
                str(yjs))[0] == 0
    assert _run(capsys, "world", "export", "--data-dir", str(a_dir), "--format", "json",
                str(js))[0] == 0
    view = json.loads(js.read_text())
    assert view["buildings"][b]["kind"] == "tower"
    doc: Doc = Doc()
    doc.apply_update(yjs.read_bytes())
    assert doc.get("buildings", type=Map).to_py() == view["buildings"]

    # Alice re-importing her own city changes nothing.
    code, out, _ = _run(capsys, "world", "import", "--data-dir", str(a_dir), str(yjs), "--json")
    assert code == 0 and json.loads(out)["changed_entries"] == 0
    # Bob importing Alice's city would write entries owned by Alice: refused, one line.
    code, out, err = _run(capsys, "world", "import", "--data-dir", str(b_dir), str(yjs))
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("cadencia world: error:") and "owned by someone" in last
    # Bob's own building, written by a foreign Yjs client, merges as his edit.
    bob = _city(b_dir)
    bob_id = bob.player_id
    bob.close()
    foreign: Doc = Doc()
    foreign.get("buildings", type=Map)["00000000000000bb"] = Map(
        {"kind": "park", "x": 0.0, "y": 0.0, "z": 0.0, "rotation": 0.0, "level": 1,
         "owner": bob_id, "plot": "", "spend": ""})
    upd = tmp_path / "bob.bin"
    upd.write_bytes(foreign.get_update())
    code, out, _ = _run(capsys, "world", "import", "--data-dir", str(b_dir), str(upd), "--json")
    assert code == 0 and json.loads(out)["changed_entries"] == 1
    bob = _city(b_dir)
    assert bob.building("00000000000000bb").owner == bob_id
    bob.close()


@pytest.mark.parametrize(("content", "error"), [
    (b"{\"buildings\": {}}", "looks like JSON"),
    (b"\xff\xfe\xfd\xfc", "not a Yjs update"),
])
def test_import_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes,
                          error: str) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(content)
    code, _, err = _run(capsys, "world", "import", "--data-dir", str(tmp_path), str(bad))
    assert code == 2 and error in err
    code, _, err = _run(capsys, "world", "import", "--data-dir", str(tmp_path),
                        str(tmp_path / "missing.bin"))
    assert code == 2 and "missing.bin" in err


def test_yjs_export_loads_in_javascript(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    city = _city(tmp_path)
    city.claim_district(role="alpha")
    for k in range(20):
        city.place_building("house", (float(k), 0.0, 0.0), rotation=float(k))
    city.add_road([(0.0, 0.0), (10.0, 0.0)])
    view = city.to_json()
    city.close()
    out = tmp_path / "city.bin"
    assert _run(capsys, "world", "export", "--data-dir", str(tmp_path), str(out))[0] == 0
    with JsPeer() as peer:
        assert peer.command("load", path=str(out)) == view

"""The view's commands end to end, offscreen: edit with scripted input, and one-line errors."""

from __future__ import annotations

import json

import pytest

from cadencia.cli import main


def test_edit_command_scripted_input_persists_in_the_city(tmp_path, capsys, pay):
    from cadencia.game.session import open_city

    city = open_city(str(tmp_path))
    pay(city)  # hosting earned the player 5,100 mc: enough for a few houses
    city.close()
    shot = tmp_path / "edit.png"
    argv = ["edit", "--offscreen", "--frames", "30", "--size", "320x240", "--data-dir", str(tmp_path),
            "--neighbour", "--script", "click 1 1; key escape; click 2 2; key r; click theirs 0 0",
            "--screenshot", str(shot), "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["buildings"] == 2 and out["plots"] == 2
    assert out["refused"] and "belongs to player" in out["message"]
    assert shot.read_bytes().startswith(b"\x89PNG")
    # The city lives in the data dir's SQLite store: a second run sees the same buildings.
    assert main(["edit", "--offscreen", "--frames", "2", "--size", "320x240", "--data-dir", str(tmp_path),
                 "--json"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (again["buildings"], again["plots"]) == (2, 2)


def test_a_build_without_the_credits_is_refused_with_the_reason(tmp_path, capsys):
    argv = ["edit", "--offscreen", "--frames", "20", "--size", "320x240", "--data-dir", str(tmp_path),
            "--script", "click 1 1", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["refused"] and "a house costs 200 mc and you have 0 mc" in out["message"]
    assert out["buildings"] == 0


@pytest.mark.parametrize("argv, message", [
    (["play", "--hive", "ws://10.1.2.3:80", "--offscreen", "--frames", "1"], "only loopback hives"),
    (["spectate", "--hive", "http://127.0.0.1:1", "--offscreen", "--frames", "1"], "must be ws://HOST:PORT"),
    (["edit", "--offscreen", "--frames", "1", "--script", "fly 1 2"], "bad script step"),
    (["edit", "--offscreen", "--frames", "1", "--kind", "castle"], "--kind must be one of"),
    (["edit", "--offscreen", "--frames", "0"], "--frames must be at least 1"),
    (["edit", "--offscreen", "--size", "big"], "--size must look like"),
    (["demo", "   "], "the prompt is empty"),
])
def test_bad_input_is_one_line_error(argv, message, capsys, tmp_path):
    if argv[0] == "edit":
        argv = [*argv, "--data-dir", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_spectating_an_unreachable_hive_fails_fast(capsys):
    assert main(["spectate", "--hive", "ws://127.0.0.1:9", "--offscreen", "--frames", "5"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("cadencia spectate: error: ws://127.0.0.1:9")

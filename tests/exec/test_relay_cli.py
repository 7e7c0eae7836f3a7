"""`ask --relay` and `serve --relay` refuse what cannot work, in one line, before loading."""

from __future__ import annotations

import pytest

from cadencia.cli import main

WS = "ws://127.0.0.1:1"  # nothing listens there: every refusal comes before any connection


@pytest.mark.parametrize(("argv", "says"), [
    (["ask", "hi", "--hive", "local:2", "--relay", "auto"], "--relay needs a live hive"),
    (["ask", "hi", "--hive", WS, "--relay", "xyz"], "node id (40 hex digits) or 'auto'"),
    (["ask", "hi", "--hive", WS, "--relay", "ab" * 19], "node id (40 hex digits) or 'auto'"),
    (["serve", "--hive", "local:2", "--relay", "auto"], "--relay needs a live hive"),
    (["serve", "--local", "--relay", "auto"], "--relay needs a live hive"),
    (["serve", "--hive", WS, "--relay", "nope"], "node id (40 hex digits) or 'auto'"),
])
def test_relay_flags_are_refused_in_one_line(argv: list[str], says: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code: object = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and says in err[0], err


def test_relay_is_documented_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("ask", "serve"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--relay NODE_ID|auto" in capsys.readouterr().out

"""CLI plumbing of the mesh commands: flag parsing, span syntax, saved entry points."""

from __future__ import annotations

import argparse

import pytest

from hive_core.mesh.dht import LayerSpanRecord
from hive_core.mesh.runner import (
    MeshConfigError,
    add_mesh_arguments,
    load_entries,
    node_config,
    parse_span,
    save_entries,
)
from hive_core.mesh.wschannel import BadAddress


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_mesh_arguments(parser)
    return parser.parse_args(list(argv))


def test_spans_parse_and_bad_ones_are_refused_with_the_expected_form() -> None:
    assert parse_span("smollm2-135m:0-15/30") == LayerSpanRecord("smollm2-135m", 0, 15, 30)
    assert parse_span("org/model:v2:3-4/8") == LayerSpanRecord("org/model:v2", 3, 4, 8)
    for bad in ("x", "m:a-b/c", ":0-1/2", "m:0-1", "m:1/2"):
        with pytest.raises(MeshConfigError, match="expected MODEL:START-END/N"):
            parse_span(bad)
    for bad in ("m:5-2/30", "m:0-40/30", "m:0-1/70000"):
        with pytest.raises(MeshConfigError, match="bad --serve"):
            parse_span(bad)


def test_node_config_from_flags() -> None:
    args = parse("--role", "beta", "--serve", "m:0-2/4", "--record-ttl", "8", "--tflops", "2")
    config = node_config(args, listen="127.0.0.1:0", join=["ws://127.0.0.1:7700"])
    assert config.roles == ("beta",)
    assert config.spans == (LayerSpanRecord("m", 0, 2, 4),)
    assert (config.record_ttl_s, config.republish_s, config.tflops) == (8.0, 2.0, 2.0)
    assert config.rtc.addresses() == ["127.0.0.1"]  # an all-loopback hive gathers on loopback
    sentinel = node_config(parse(), listen="127.0.0.1:7700", join=[], sentinel=True)
    assert sentinel.roles == ("sentinel", "alpha", "beta")
    ice = node_config(parse("--ice-host", "127.0.0.1", "--loopback-candidate"), listen=None,
                      join=["ws://10.0.0.1:7700"])
    assert ice.rtc.addresses() == ["127.0.0.1"]
    with pytest.raises(BadAddress):
        node_config(parse(), listen=None, join=["http://127.0.0.1:1"])
    with pytest.raises(BadAddress):
        node_config(parse(), listen="nonsense", join=[])
    # The flags refuse these while parsing; a Namespace built in code is checked here too.
    for flag, value in (("record_ttl", 0.5), ("connect_timeout", 0.0)):
        args = parse()
        setattr(args, flag, value)
        with pytest.raises(MeshConfigError, match="--" + flag.replace("_", "-")):
            node_config(args, listen=None, join=[])


@pytest.mark.parametrize(("argv", "says"), [
    (["--record-ttl", "0.5"], "--record-ttl: must be in 1..86_400 s, got '0.5'"),
    (["--connect-timeout", "nan"], "--connect-timeout: must be in 0.1..600 s, got 'nan'"),
    (["--ice-host", "eth0"], "--ice-host: expected an IP address like 127.0.0.1, got 'eth0'"),
    (["--serve", "m:0-1/" + "9" * 50], "bad --serve"),
    (["--tflops", "x" * 5000], "...' (5000 chars)"),
])
def test_flags_are_refused_while_parsing(capsys: pytest.CaptureFixture[str], argv: list[str],
                                         says: str) -> None:
    with pytest.raises(SystemExit):
        parse(*argv)
    assert says in capsys.readouterr().err


def test_entry_points_are_saved_and_garbage_lines_skipped(tmp_path) -> None:
    assert load_entries(tmp_path) == []
    save_entries(tmp_path, ["ws://127.0.0.1:1", "ws://127.0.0.1:2", "ws://127.0.0.1:1"])
    assert load_entries(tmp_path) == ["ws://127.0.0.1:1", "ws://127.0.0.1:2"]
    (tmp_path / "entries.txt").write_bytes(b"ws://127.0.0.1:3\nrm -rf /\n\xff\xfe\n")
    assert load_entries(tmp_path) == []  # not UTF-8: ignored as a whole
    (tmp_path / "entries.txt").write_text("ws://127.0.0.1:3\nhttp://evil\n\nws://h:4/path\n")
    assert load_entries(tmp_path) == ["ws://127.0.0.1:3"]

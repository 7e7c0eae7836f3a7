"""Every command refuses bad input the same way: exit status 2, exactly one line on stderr that
names the argument and what it takes, no traceback, quickly, and never echoing a hostile
string whole. Most run through `cadencia.cli.main` in this process; the ones that need real
argv bytes (non-UTF-8 prompts), a huge argument or torch run as real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cadencia.cli import main

CLI = [sys.executable, "-m", "cadencia"]
WS = "ws://127.0.0.1:1"  # nothing listens there; every refusal comes before any connection
MAX_LINE = 600

# (argv, what the one error line must say); {tmp} is a fresh directory.
BAD: list[tuple[list[str], str]] = [
    # generate
    (["generate", ""], "error: the prompt is empty"),
    (["generate", "   "], "the prompt is empty"),
    (["generate", "hi", "--max-new-tokens", "0"], "--max-new-tokens: must be in 1..1_000_000"),
    (["generate", "hi", "--max-new-tokens", "1000000000"], "must be in 1..1_000_000"),
    (["generate", "hi", "--max-new-tokens", "100000"], "context holds 8192 tokens"),
    (["generate", "hi", "--temperature", "-1"], "--temperature: must be in 0..100"),
    (["generate", "hi", "--temperature", "nan"], "--temperature: must be in 0..100"),
    (["generate", "hi", "--top-p", "0"], "--top-p: must be in 0.001..1"),
    (["generate", "hi", "--seed", "-5"], "--seed: must be in 0.."),
    (["generate", "hi", "--threads", "0"], "--threads: must be in 1..1_024"),
    (["generate", "hi", "--threads", "many"], "--threads: invalid int value: 'many'"),
    (["generate", "hi", "--weights", "bogus"], "--weights: invalid choice"),
    (["generate", "hi", "--model", "{tmp}/none.gguf"], "none.gguf"),
    (["generate", "caf\udce9"], "not valid UTF-8 (byte 0xe9 at character 3)"),
    # ask
    (["ask", "hi", "--hive", WS, "--timeout", "-1"], "--timeout: must be in 0.1..3_600 s"),
    (["ask", "hi", "--hive", WS, "--timeout", "inf"], "--timeout: must be in 0.1..3_600 s"),
    (["ask", "hi", "--hive", "http://x"], "expected ws://HOST:PORT"),
    (["ask", "hi", "--hive", "local:0"], "local:N with N in 1..64"),
    (["ask", "hi", "--hive", "local:99"], "local:N with N in 1..64"),
    (["ask", "hi", "--hive", WS, "--speculate", "-1"], "--speculate: must be in 0..64"),
    (["ask", "hi", "--hive", WS, "--local-layers", "-1"], "--local-layers: must be in 0.."),
    (["ask", "--hive", WS], "the following arguments are required: prompt"),
    # node and sentinel (the mesh flags), hive
    (["node"], "required: --join"),
    (["node", "--join", "notaurl"], "bad hive URL 'notaurl'"),
    (["node", "--join", WS, "--listen", "nope"], "bad listen address 'nope'"),
    (["node", "--join", WS, "--ping-interval", "0"], "--ping-interval: must be in 0.05..3_600"),
    (["node", "--join", WS, "--dead-after", "-3"], "--dead-after: must be in 0.1..86_400"),
    (["node", "--join", WS, "--record-ttl", "1e12"], "--record-ttl: must be in 1..86_400"),
    (["node", "--join", WS, "--ping-interval", "5", "--dead-after", "2"],
     "need 0 < --ping-interval < --dead-after"),
    (["node", "--join", WS, "--serve", "m:5-2/30"], "bad --serve 'm:5-2/30'"),
    (["node", "--join", WS, "--ice-host", "not-an-ip"], "expected an IP address"),
    (["node", "--join", WS, "--tflops", "-1"], "--tflops: must be in 0..100_000"),
    (["node", "--join", WS, "--threads", "0"], "--threads: must be in 1..1_024"),
    (["node", "--join", WS, "--world-interval", "0"], "--world-interval: must be in 0.05"),
    (["node", "--join", WS, "--connect-timeout", "0"], "--connect-timeout: must be in 0.1..600"),
    (["node", "--join", WS, "--role", "queen"], "--role: invalid choice: 'queen'"),
    (["sentinel", "--listen", "127.0.0.1:99999"], "bad listen address '127.0.0.1:99999'"),
    (["hive"], "required: ACTION"),
    (["hive", "up", "--nodes", "-1"], "--nodes: must be in 0..64"),
    (["hive", "up", "--nodes", "1000"], "--nodes: must be in 0..64"),
    (["hive", "up", "--stages", "0"], "--stages: must be in 1..64"),
    (["hive", "status", "--hive", WS, "--timeout", "0"], "--timeout: must be in 0.1..3_600"),
    (["hive", "status", "--hive", "nope"], "bad hive URL 'nope'"),
    (["hive", "status"], "required: --hive"),
    # world
    (["world", "import", "{tmp}/missing.bin", "--data-dir", "{tmp}/d"], "missing.bin"),
    (["world", "import", "{tmp}/city.json", "--data-dir", "{tmp}/d"], "looks like JSON"),
    (["world", "import", "{tmp}/garbage.bin", "--data-dir", "{tmp}/d"], "not a Yjs update"),
    (["world", "export", "--format", "xml", "x"], "--format: invalid choice: 'xml'"),
    (["world", "frobnicate"], "invalid choice: 'frobnicate'"),
    # the game's commands (refused before any window opens)
    (["edit", "--frames", "1", "--kind", "spaceship"], "--kind must be one of"),
    (["edit", "--frames", "0"], "--frames must be at least 1 and at most 10000000, got 0"),
    (["edit", "--frames", "100000000000"], "--frames must be at least 1 and at most"),
    (["edit", "--frames", "1", "--fps", "-5"], "--fps: must be in 1..1_000"),
    (["edit", "--frames", "1", "--size", "10x99999"], "--size must be 16..16384"),
    (["edit", "--frames", "1", "--script", "jump"], "bad script step 'jump'"),
    (["spectate", "--hive", "ws://example.com:80", "--frames", "1"], "only loopback hives"),
    (["spectate", "--hive", "local", "--max-new-tokens", "0"], "--max-new-tokens: must be in"),
    (["demo", "   ", "--frames", "1"], "error: the prompt is empty"),
    (["demo", "--links", "pigeon"], "--links: invalid choice"),
    (["play", "--max-new-tokens", "-1"], "--max-new-tokens: must be in 1"),
    (["play", "--serve", "bad"], "bad --serve 'bad'"),
    (["play", "--tflops", "1e9"], "--tflops: must be in 0..100_000"),
    # sim
    (["sim", "--nodes", "1"], "--nodes: must be in 2..100_000"),
    (["sim", "--churn", "2"], "--churn: must be in 0..0.99"),
    (["sim", "--loss", "-0.1"], "--loss: must be in 0..0.99"),
    (["sim", "--latency", "constant:abc"], "bad latency model 'constant:abc'"),
    # top level
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    ([], "required: COMMAND"),
]


@pytest.fixture
def tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CADENCIA_DATA_DIR", str(tmp_path / "data"))  # never the user's own
    (tmp_path / "city.json").write_text('{"buildings": {}}')
    (tmp_path / "garbage.bin").write_bytes(b"\xff\xfe\xfd\xfc" * 8)
    return tmp_path


def refused_in_one_line(code: object, err: str, says: str, took: float) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert says in lines[0], lines[0]
    assert len(lines[0]) <= MAX_LINE
    assert took < 60
    return lines[0]


@pytest.mark.parametrize(("argv", "says"), BAD, ids=[" ".join(a)[:60] or "(none)" for a, _ in BAD])
def test_a_bad_invocation_is_refused_in_one_line(
    argv: list[str], says: str, tmp: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    t0 = time.monotonic()
    try:
        code: object = main([a.replace("{tmp}", str(tmp)) for a in argv])
    except SystemExit as exc:  # argparse refuses while parsing
        code = exc.code
    refused_in_one_line(code, capsys.readouterr().err, says, time.monotonic() - t0)


def test_real_processes_refuse_bytes_huge_arguments_and_hostile_files(tmp: Path) -> None:
    """Real argv: bytes that are not UTF-8 (as a shell passes them), an argument of 100,000
    characters, a 30 MB hostile `world import` file, and flags only checked after torch loads."""
    from pycrdt import Doc, Map

    doc = Doc()
    doc.get("R" * 30_000_000, type=Map)["k"] = 1  # a root named with 30 MB of text
    hostile = tmp / "hostile.ydoc"
    hostile.write_bytes(doc.get_update())
    huge = "A" * 100_000
    runs: list[tuple[list[str | bytes], str]] = [
        ([b"generate", b"\xff\xfe broken"], "not valid UTF-8 (byte 0xff at character 0)"),
        ([b"ask", b"caf\xe9", b"--hive", WS.encode()], "not valid UTF-8 (byte 0xe9"),
        (["ask", "hi", "--hive", WS, "--timeout", "-1"], "--timeout: must be in 0.1..3_600 s"),
        (["ask", "hi", "--hive", WS, "--max-new-tokens", "100000"], "so at most"),
        (["generate", "hi", "--max-new-tokens", "1000000000"], "must be in 1..1_000_000"),
        (["hive", "status", "--hive", f"ws://{huge}:1"], "too long"),
        (["node", "--join", WS, "--serve", huge], "expected MODEL:START-END/N"),
        (["world", "import", str(hostile), "--data-dir", str(tmp / "d")], "unknown roots"),
    ]
    env = {**os.environ, "CADENCIA_DATA_DIR": str(tmp / "data")}
    t0 = time.monotonic()
    procs = [subprocess.Popen([*CLI, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env=env) for argv, _ in runs]
    for proc, (_, says) in zip(procs, runs, strict=True):
        _, err = proc.communicate(timeout=120)
        line = refused_in_one_line(proc.returncode, err.decode("utf-8", "replace"), says,
                                   time.monotonic() - t0)
        assert huge not in line and "R" * 1000 not in line

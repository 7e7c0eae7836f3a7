"""`hive up --plan`: nodes preload nothing and the asker's planner places the layers, which the
nodes load on first use; the answer is the one `generate` gives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cadencia.cli import build_parser
from cadencia.commands.hive import _serving

CLI = [sys.executable, "-m", "cadencia"]


def test_plan_preloads_nothing_and_keeps_each_nodes_share(tiny_gguf: Path) -> None:
    parser = build_parser()
    spans = parser.parse_args(["hive", "up", "--nodes", "2", "--model", str(tiny_gguf)])
    planned = parser.parse_args(["hive", "up", "--nodes", "2", "--model", str(tiny_gguf),
                                 "--plan"])
    _, with_spans = _serving(spans)
    _, without = _serving(planned)
    assert all("--serve" in f for f in with_spans[1:])
    assert without[0] == [] and all("--serve" not in f for f in without)
    assert [f for f in with_spans[1:]] == [[*f, "--serve", s] for f, s in zip(
        without[1:], (g[g.index("--serve") + 1] for g in with_spans[1:]), strict=True)]


def ask_json(*args: str, env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run([*CLI, *args, "--json"], capture_output=True, text=True, check=False,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.net
def test_an_ask_on_a_planned_hive_matches_generate(tiny_gguf: Path, tmp_path: Path) -> None:
    env = {**os.environ, "CADENCIA_DATA_DIR": str(tmp_path / "asker")}
    up = subprocess.Popen(
        [*CLI, "hive", "up", "--nodes", "2", "--plan", "--model", str(tiny_gguf), "--weights",
         "fp32", "--data-dir", str(tmp_path), "--json", "--no-world", "--tflops", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        assert up.stdout is not None
        summary = json.loads(up.stdout.readline())
        assert [n["serves"] for n in summary["nodes"]] == [None, None]
        common = ["hi there", "--raw", "--model", str(tiny_gguf), "--weights", "fp32",
                  "--max-new-tokens", "6"]
        local = ask_json("generate", *common, env=env)
        asked = ask_json("ask", *common, "--hive", summary["sentinel"], "--replicas", "1",
                         "--timeout", "30", env=env)
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        up.wait(60)
        if up.stdout is not None:
            up.stdout.close()
    assert asked["new_ids"] == local["new_ids"]
    plan = asked["plan"]
    assert isinstance(plan, dict) and plan["est_token_ms"] > 0  # the planner's, not spans
    layers = [tuple(s["layers"]) for s in plan["stages"]]
    assert layers[0][0] == 1 and layers[-1][1] == 3  # all but the asker's first and last

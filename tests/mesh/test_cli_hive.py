"""`cadencia hive up`, `hive status --json` and Ctrl-C, as a user runs them (real processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.net, pytest.mark.timeout(180)]

CLI = [sys.executable, "-m", "cadencia"]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], check=False, capture_output=True, text=True,
                          timeout=30, env=env)


@pytest.mark.real_model  # by default the nodes serve the bundled SmolLM2, split in two spans
def test_hive_up_status_ask_and_ctrl_c_stops_everything(tmp_path) -> None:
    up = subprocess.Popen(
        [*CLI, "hive", "up", "--nodes", "2", "--data-dir", str(tmp_path), "--json",
         "--tflops", "0.5", "--ping-interval", "0.3", "--record-ttl", "8"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert up.stdout is not None
        summary = json.loads(up.stdout.readline())
        url = summary["sentinel"]
        ids = {summary["sentinel_id"], *(n["id"] for n in summary["nodes"])}
        assert url.startswith("ws://127.0.0.1:") and len(ids) == 3
        view: dict = {}
        for _ in range(40):  # records of nodes that joined last may still be on their way
            out = cli("hive", "status", "--hive", url, "--json")
            assert out.returncode == 0, out.stderr
            view = json.loads(out.stdout)
            if {n["id"] for n in view["nodes"]} == ids and len(view["rtt_ms"]) == 3:
                break
            time.sleep(0.25)
        assert {n["id"] for n in view["nodes"]} == ids
        for node in view["nodes"]:
            assert {"id", "role", "health", "fitness"} <= set(node)
            assert node["health"]["tflops"] == 0.5
        assert {n["role"] for n in view["nodes"]} == {"sentinel", "auto"}
        assert all(set(row) <= ids for row in view["rtt_ms"].values())
        assert (tmp_path / "hive-up" / "node-1" / "node.key").exists()
        text = cli("hive", "status", "--hive", url)
        assert "3 nodes" in text.stdout and "sentinel" in text.stdout
        # Right after the ready line, `ask` with no model flag gets what `generate` answers.
        assert [n["serves"].split(":")[1] for n in summary["nodes"]] == ["0-15/30", "15-30/30"]
        prompt = ["Name a primary color.", "--max-new-tokens", "5", "--json"]
        local = subprocess.run([*CLI, "generate", *prompt], capture_output=True, text=True,
                               timeout=120, check=True)
        asked = subprocess.run([*CLI, "ask", *prompt, "--hive", url, "--timeout", "30"],
                               capture_output=True, text=True, timeout=180, check=False)
        assert asked.returncode == 0, asked.stderr[-2000:]
        assert json.loads(asked.stdout)["new_ids"] == json.loads(local.stdout)["new_ids"]
        up.send_signal(signal.SIGINT)
        _, err = up.communicate(timeout=30)
        assert up.returncode == 0, err
        assert "hive up: all stopped" in err and err.count(" stopped") >= 4
        # Each node saved where its peers listen, to rejoin later without the sentinel.
        saved = (tmp_path / "hive-up" / "node-0" / "entries.txt").read_text().split()
        assert url in saved and all(u.startswith("ws://127.0.0.1:") for u in saved)
    finally:
        if up.poll() is None:
            up.kill()
            up.communicate()


def test_cli_errors_are_one_line() -> None:
    env = {**os.environ, "CADENCIA_DATA_DIR": "/nonexistent-never-used"}
    bad_url = cli("hive", "status", "--hive", "http://x", env=env)
    assert bad_url.returncode == 2
    assert bad_url.stderr.strip() == ("cadencia hive: error: bad hive URL 'http://x': "
                                      "expected ws://HOST:PORT")
    down = cli("hive", "status", "--hive", "ws://127.0.0.1:9", "--timeout", "2", env=env)
    assert down.returncode == 1 and down.stderr.count("\n") == 1
    assert "ws://127.0.0.1:9" in down.stderr
    bad_timer = cli("node", "--join", "ws://127.0.0.1:9", "--ping-interval", "9",
                    "--dead-after", "1", env=env)
    assert bad_timer.returncode == 2
    assert "--ping-interval < --dead-after" in bad_timer.stderr


def test_hive_up_passes_its_weights_mode_to_every_serving_node(tiny_gguf) -> None:
    """...and each serving node its share of the cores."""
    from cadencia.cli import build_parser
    from cadencia.commands.hive import _serving
    from hive_core.model.packed_run import default_threads

    share = str(max(1, default_threads() // 2))
    parser = build_parser()
    args = parser.parse_args(["hive", "up", "--nodes", "2", "--model", str(tiny_gguf),
                              "--weights", "packed"])
    model, flags = _serving(args)
    assert model == str(tiny_gguf) and flags[0] == []  # the sentinel serves nothing
    for i, child in enumerate(flags[1:]):
        assert child == ["--model", str(tiny_gguf), "--weights", "packed", "--threads", share,
                         "--serve", f"{tiny_gguf.name[:128]}:{2 * i}-{2 * i + 2}/4"]
        # What the child process parses from them.
        node = parser.parse_args(["node", "--join", "ws://127.0.0.1:9", *child])
        assert node.weights == "packed" and node.serve == [child[-1]]
        assert node.threads == int(share)
    default = parser.parse_args(["hive", "up", "--nodes", "1", "--model", str(tiny_gguf)])
    from hive_core.model.modes import DEFAULT_WEIGHTS

    assert _serving(default)[1][1][2:4] == ["--weights", DEFAULT_WEIGHTS]

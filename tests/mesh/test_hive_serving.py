"""`cadencia hive up` serving a model: spans split across nodes, `ask` right after the ready
line, an ask that still works once the sentinel is gone, and no child left after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from hive_core.mesh.layout import SpanLayoutError, assign_spans, default_stages, even_spans

pytestmark = [pytest.mark.timeout(240)]

CLI = [sys.executable, "-m", "cadencia"]


def test_spans_are_contiguous_and_replicated_from_four_nodes() -> None:
    assert even_spans(30, 1) == [(0, 30)]
    assert even_spans(30, 4) == [(0, 8), (8, 16), (16, 23), (23, 30)]
    assert [default_stages(n) for n in (1, 2, 3, 4, 5, 8)] == [1, 2, 3, 2, 2, 4]
    three = assign_spans("m.gguf", 30, 3)
    assert three == ["m.gguf:0-10/30", "m.gguf:10-20/30", "m.gguf:20-30/30"]
    four = assign_spans("m.gguf", 30, 4)
    assert four == ["m.gguf:0-15/30", "m.gguf:15-30/30"] * 2  # every span on 2 nodes
    assert assign_spans("m.gguf", 4, 5, stages=1) == ["m.gguf:0-4/4"] * 5
    for bad in ((4, 0, None), (4, 3, 4), (2, 3, 3)):  # no server, stages > servers or layers
        with pytest.raises(SpanLayoutError):
            assign_spans("m.gguf", bad[0], bad[1], bad[2])


def run_cli(*args: str, timeout: float = 120) -> dict:
    out = subprocess.run([*CLI, *args], check=False, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def ask(url: str, model: Path) -> dict:
    return run_cli("ask", "the cat sat", "--hive", url, "--model", str(model), "--raw",
                   "--max-new-tokens", "6", "--json", "--timeout", "20")


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.mark.net
def test_hive_up_serves_asks_survive_the_sentinel_and_sigkill_leaves_no_child(
        tmp_path: Path, tiny_gguf: Path) -> None:
    local = run_cli("generate", "the cat sat", "--model", str(tiny_gguf), "--raw",
                    "--max-new-tokens", "6", "--json")
    up = subprocess.Popen(
        [*CLI, "hive", "up", "--nodes", "2", "--model", str(tiny_gguf), "--data-dir",
         str(tmp_path), "--json", "--tflops", "0.5", "--ping-interval", "0.3",
         "--record-ttl", "8", "--no-world"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children: list[psutil.Process] = []
    try:
        assert up.stdout is not None
        summary = json.loads(up.stdout.readline())
        name = tiny_gguf.name
        assert summary["sentinel_serves"] is None  # not the sentinel unless asked
        assert [n["serves"] for n in summary["nodes"]] == [f"{name}:0-2/4", f"{name}:2-4/4"]
        children = psutil.Process(up.pid).children()
        assert len(children) == 3
        # Right after the ready line: the asker finds the spans and gets the local answer.
        first = ask(summary["sentinel"], tiny_gguf)
        assert first["new_ids"] == local["new_ids"]
        ids = [n["id"] for n in summary["nodes"]]
        assert [r["nodes"] for r in first["route"]] == [[ids[0]], [ids[1]]]
        # The sentinel stops: asking through a node's own entry still works.
        sentinel = next(p for p in children if "sentinel" in p.cmdline())
        sentinel.send_signal(signal.SIGTERM)
        sentinel.wait(30)
        second = ask(summary["nodes"][1]["listen"], tiny_gguf)
        assert second["new_ids"] == local["new_ids"]
        assert [r["nodes"] for r in second["route"]] == [[ids[0]], [ids[1]]]
        # `hive up` killed outright: its nodes must not live on.
        up.send_signal(signal.SIGKILL)
        up.wait(10)
        deadline = time.monotonic() + 30
        while alive(children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive(children), [p.cmdline() for p in alive(children)]
    finally:
        if up.poll() is None:
            up.kill()
        up.communicate()
        for p in alive(children):
            p.kill()


def test_hive_up_refuses_bad_serving_flags(tmp_path: Path) -> None:
    env = {**os.environ, "CADENCIA_DATA_DIR": str(tmp_path)}
    bad = subprocess.run([*CLI, "hive", "up", "--nodes", "2", "--stages", "3", "--model",
                          str(tmp_path / "missing.gguf")], capture_output=True, text=True,
                         timeout=60, env=env, check=False)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1, bad.stderr
    assert not list(tmp_path.glob("hive-up/*"))  # nothing started


@pytest.mark.net
def test_the_sentinel_serves_layers_when_asked(tmp_path: Path, tiny_gguf: Path) -> None:
    local = run_cli("generate", "the cat sat", "--model", str(tiny_gguf), "--raw",
                    "--max-new-tokens", "6", "--json")
    up = subprocess.Popen(
        [*CLI, "hive", "up", "--nodes", "1", "--sentinel-serves", "--model", str(tiny_gguf),
         "--data-dir", str(tmp_path), "--json", "--tflops", "0.5", "--no-world"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert up.stdout is not None
        summary = json.loads(up.stdout.readline())
        assert summary["sentinel_serves"] == f"{tiny_gguf.name}:0-2/4"
        assert summary["nodes"][0]["serves"] == f"{tiny_gguf.name}:2-4/4"
        answer = ask(summary["sentinel"], tiny_gguf)
        assert answer["new_ids"] == local["new_ids"]
        assert answer["route"][0]["nodes"] == [summary["sentinel_id"]]
        up.send_signal(signal.SIGINT)
        _, err = up.communicate(timeout=60)
        assert up.returncode == 0 and "hive up: all stopped" in err
    finally:
        if up.poll() is None:
            up.kill()
            up.communicate()

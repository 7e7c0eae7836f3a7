"""Memory of a hive's nodes: a node serving layers [a, b) holds those layers' bytes as the file
stores them and its KV caches (the asker alone holds the embedding rows and the head), so its
peak RSS stays within 1.15 times its layers' bytes plus the `import torch` baseline; a stage
outside a node's spans is let go again; weights a machine cannot hold are refused up front."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch

from cadencia.cli import main as cli
from hive_core.base.stage import Stage
from hive_core.exec.stage_host import StageHost
from hive_core.model.gguf_file import GGUFModelFile
from hive_core.model.packed.mapped import evict, file_bytes
from hive_core.model.quant import read_footprint, write_synthetic
from hive_core.protocol.inference import KvKind

CLI = [sys.executable, "-m", "cadencia"]
BOUND = 1.15  # peak RSS over the node's layers' bytes, past the `import torch` baseline


def peak_rss(pid: int) -> int:
    """A live process's peak resident set (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


def torch_baseline() -> int:
    """The peak RSS of a Python process that imported torch and did nothing else."""
    code = ("import torch, pathlib; print(next(l for l in pathlib.Path('/proc/self/status')"
            ".read_text().splitlines() if l.startswith('VmHWM:')).split()[1])")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return int(out.stdout) * 1024


@pytest.fixture(scope="module")
def llama3_prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Llama-3-8B's first 16 layers in Q4_K_M with random weights (2.8 GB, written in seconds):
    two nodes of 8 layers each, a node's share when the whole model is split over four."""
    path = tmp_path_factory.mktemp("llama3") / "llama3-8b-prefix.gguf"
    write_synthetic(path, "llama3-8b", "Q4_K_M", n_layers=16)
    return path


@pytest.mark.slow
@pytest.mark.net
@pytest.mark.timeout(600)
def test_each_node_of_a_hive_holds_its_layers_and_little_more(
        tmp_path: Path, llama3_prefix: Path) -> None:
    """`hive up --nodes 2` over the Llama-3-8B prefix answers `ask`, and each serving node's
    peak RSS (VmHWM, read while it runs) is at most 1.15x its layers' bytes plus what
    `import torch` alone takes: no embedding, no head, no copy of its weights, and no second
    stage while it audits the other node's (verification is on: one replica a stage, so each
    node audits the other's). (The margin,
    0.15 of 8 layers, holds the mesh's own imports and state, about 80 MB, and the KV caches;
    a node of one or two layers would spend more than that on the mesh alone.)"""
    baseline = torch_baseline()
    footprint = read_footprint(llama3_prefix)
    up = subprocess.Popen(
        [*CLI, "hive", "up", "--nodes", "2", "--model", str(llama3_prefix), "--data-dir",
         str(tmp_path), "--json", "--tflops", "0.5", "--no-world", "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert up.stdout is not None
        summary = json.loads(up.stdout.readline())
        answer = subprocess.run(
            [*CLI, "ask", "Hello", "--raw", "--hive", summary["sentinel"], "--model",
             str(llama3_prefix), "--max-new-tokens", "4", "--json", "--timeout", "60"],
            check=False, capture_output=True, text=True, timeout=300)
        assert answer.returncode == 0, answer.stderr[-2000:]
        result = json.loads(answer.stdout)
        assert len(result["new_ids"]) == 4
        # Verified: each node audited the other's stage, streamed through (stage_host.py).
        assert result["verified"] is True
        nodes = [p for p in psutil.Process(up.pid).children() if "--serve" in p.cmdline()]
        assert len(nodes) == 2
        for node in nodes:
            cmd = node.cmdline()
            span = cmd[cmd.index("--serve") + 1].rsplit(":", 1)[1].split("/")[0]
            start, end = (int(n) for n in span.split("-"))
            layers = sum(footprint.layer_bytes[start:end])
            peak = peak_rss(node.pid)
            assert peak <= BOUND * layers + baseline, (
                f"node of layers {start}-{end}: peak {peak / 1e6:.0f} MB, its layers "
                f"{layers / 1e6:.0f} MB, import torch {baseline / 1e6:.0f} MB")
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
            up.communicate()


def test_a_stage_outside_the_served_spans_is_let_go_when_another_is_asked(
        tiny_gguf: Path) -> None:
    """A spare's failover or an audit asks a node for layers it does not serve: it loads
    them, and drops them (and their pages) when the next such stage comes or when no session
    runs them any more."""
    host = StageHost(GGUFModelFile(tiny_gguf), _host_config())
    host.load(Stage(0, 2))
    served = host.executors[0]
    hidden = bytes(4 * 64 * 3)  # three float32 rows of the tiny model's 64-wide hidden states
    for i, stage in enumerate((Stage(2, 4), Stage(1, 3), Stage(2, 3))):
        out, _ = host.step((b"p" * 20, bytes([i]), stage), 0, 3, KvKind.FP32, hidden)
        assert len(out) == len(hidden)
        assert host.executors[0] is served and len(host.executors) <= 2
    # Stage(2, 3) is covered by the one held for Stage(1, 3): nothing new was loaded for it.
    assert host.loaded_stages == ["0:2:full", "2:4:full", "1:3:full"]
    host.step((b"p" * 20, b"\x09", Stage(0, 1)), 0, 3, KvKind.FP32, hidden)
    assert host.executors[0] is served and len(host.executors) == 2  # served ones cover it
    # Once no session runs a stage outside the served ones, that stage goes too.
    for i in (0, 1, 2):
        host.end(b"p" * 20, bytes([i]))
    assert host.executors == [served] and len(host.sessions) == 1


def _host_config() -> Any:
    from hive_core.exec.stage_host import HostConfig

    return HostConfig(weights="packed")


def _tiny_memory(monkeypatch: pytest.MonkeyPatch, available: int) -> None:
    real = psutil.virtual_memory

    def small() -> Any:
        return real()._replace(available=available)

    monkeypatch.setattr(psutil, "virtual_memory", small)


def test_a_model_larger_than_the_free_memory_is_refused_before_anything_starts(
        tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`hive up`, `node` and `generate` say what they would hold and what the machine has, in
    one line, exit 2, and leave no process or loaded layer behind."""
    _tiny_memory(monkeypatch, 1000)
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    code = cli(["hive", "up", "--nodes", "2", "--model", str(tiny_gguf), "--data-dir",
                str(tmp_path), "--tflops", "0.5", "--no-world"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "4 layers of tiny-llama.gguf (packed weights" in err
    assert "but this machine has 0.00 GB of memory available" in err
    assert {p.pid for p in psutil.Process().children(recursive=True)} == before
    code = cli(["node", "--join", "ws://127.0.0.1:9", "--model", str(tiny_gguf), "--serve",
                "tiny-llama.gguf:1-3/4", "--data-dir", str(tmp_path), "--tflops", "0.5",
                "--no-world"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "layers 1..3 of tiny-llama.gguf (2 layers, packed weights) need" in err
    code = cli(["generate", "hi", "--model", str(tiny_gguf), "--raw", "--max-new-tokens", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "tiny-llama.gguf's 4 layers and head (packed weights) need" in err
    # With the memory there, the same file loads.
    _tiny_memory(monkeypatch, 64 << 30)
    assert cli(["generate", "hi", "--model", str(tiny_gguf), "--raw", "--max-new-tokens", "2",
                "--json"]) == 0


def _mapped_rss(mapped: torch.Tensor) -> int:
    """Bytes of the memory map under `mapped` resident in this process (its smaps Rss)."""
    ptr, lines = mapped.data_ptr(), Path("/proc/self/smaps").read_text().splitlines()
    for i, line in enumerate(lines):
        span = line.split(" ", 1)[0]
        if "-" in span and not line.endswith(":") and ":" not in span:
            lo, hi = (int(x, 16) for x in span.split("-"))
            if lo <= ptr < hi:
                rss = next(x for x in lines[i + 1:] if x.startswith("Rss:"))
                return int(rss.split()[1]) * 1024
    raise AssertionError("the model's map is not in smaps")


def test_an_audited_stage_is_streamed_through_and_its_answer_is_unchanged(
        smollm_path: Path) -> None:
    """Many rows of a stage a node does not serve (an audit) pass it one matrix at a time: the
    node ends with none of that stage's pages, where loading it to serve holds them all, and
    the output bytes are the same bits."""
    file = GGUFModelFile(smollm_path)
    audited = Stage(15, 30)
    hidden = torch.randn(8, file.config.hidden, generator=torch.Generator().manual_seed(3))
    raw = hidden.numpy().astype("<f4").tobytes()
    mapped = file_bytes(smollm_path)  # the one map of the file this process's matrices share
    evict(mapped, 0, mapped.numel())  # earlier tests in this process may hold its pages
    node = StageHost(file, _host_config())
    node.load(Stage(0, 15))
    before = _mapped_rss(mapped)
    streamed, _ = node.step((b"a" * 20, b"\x01", audited), 0, 8, KvKind.FP32, raw)
    kept = _mapped_rss(mapped) - before
    server = StageHost(file, _host_config())
    server.load(audited)  # serving it: its pages are read in and held
    served, _ = server.step((b"a" * 20, b"\x02", audited), 0, 8, KvKind.FP32, raw)
    held = _mapped_rss(mapped) - before
    stage_bytes = sum(read_footprint(smollm_path).layer_bytes[15:30])
    assert streamed == served
    assert held > 0.8 * stage_bytes, f"the served stage holds {held / 1e6:.1f} MB"
    assert kept < 0.1 * stage_bytes, (f"{kept / 1e6:.1f} MB of the audited stage's "
                                      f"{stage_bytes / 1e6:.1f} MB stayed")

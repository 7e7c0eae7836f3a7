"""Stage workers forked from one fork server: each one answers as a worker started on its own
does, the server imports once and exits once the hive is built, and a forked worker that dies
or is closed behaves as a started one does (clear failure at once, nothing left running)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from hive_core.base.stage import Stage
from hive_core.exec.hive import build_hive
from hive_core.exec.stage_host import StageHost
from hive_core.exec.stage_worker import StageWorker, WorkerConfig, WorkerError
from hive_core.exec.wire import hidden_bytes
from hive_core.exec.worker_fork import ForkedProcess, ForkServer, active, forking
from hive_core.protocol.inference import KvKind

pytestmark = pytest.mark.skipif(not ForkServer.available(), reason="no pidfds or fork here")
PEER, SESSION = b"\x01" * 20, b"s" * 16


def _gone(pid: int, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_forked_workers_compute_as_a_started_one_and_die_cleanly(tiny_gguf: Any, tiny_file: Any) -> None:
    torch = pytest.importorskip("torch")
    with forking(str(tiny_gguf)) as server:
        assert server is not None and active(str(tiny_gguf)) is server
        assert active("/elsewhere.gguf") is None  # another model's workers start on their own
        workers = [StageWorker(WorkerConfig(str(tiny_gguf), reply_timeout_s=60, fault=fault))
                   for fault in ("", "noise")]
    assert active(str(tiny_gguf)) is None
    try:
        for w in workers:
            assert isinstance(w.proc, ForkedProcess)
            w.ready()  # reads the hello first
        assert server.wait(30) == 0  # closed after the forks: it exits, the workers live on
        honest, liar = workers
        assert honest.proc.pid != liar.proc.pid and honest.alive and liar.alive
        key = (PEER, SESSION, Stage(0, 2))
        x = torch.randn(3, tiny_file.config.hidden)
        out, took = honest.step(key, 0, 3, KvKind.FP32, hidden_bytes(x))
        local, _ = StageHost(tiny_file).step(key, 0, 3, KvKind.FP32, hidden_bytes(x))
        assert out == local and took > 0
        noisy, _ = liar.step(key, 0, 3, KvKind.FP32, hidden_bytes(x))
        assert noisy != local  # each forked worker keeps its own configuration (its fault)

        os.kill(honest.proc.pid, signal.SIGKILL)
        honest.proc.wait(10)
        assert not honest.alive
        with pytest.raises(WorkerError, match="died"):
            honest.step(key, 3, 1, KvKind.FP32, b"\x00" * (tiny_file.config.hidden * 4))
        pid = liar.proc.pid
        liar.close()
        assert _gone(pid)
    finally:
        for w in workers:
            w.close()


async def test_a_process_hive_forks_its_workers_from_a_server_started_early(tiny_gguf: Any,
                                                                           tiny_file: Any) -> None:
    early = ForkServer(str(tiny_gguf))
    hive = await build_hive(tiny_gguf, 2, replicas=1, model=tiny_file, stages=[Stage(1, 2), Stage(2, 3)],
                            compute_process=True, fork_server=early)
    try:
        assert all(isinstance(s.host, StageWorker) and isinstance(s.host.proc, ForkedProcess)
                   for s in hive.servers)
        assert early.wait(30) == 0  # its socket closed once the servers were built
        assert [s.host.loaded_stages for s in hive.servers] == [[str(Stage(1, 2))], [str(Stage(2, 3))]]
    finally:
        pids = [s.host.proc.pid for s in hive.servers]
        await hive.close()
    assert all(_gone(p) for p in pids)


def test_a_worker_whose_fork_server_died_starts_on_its_own(tiny_gguf: Any) -> None:
    """The server was killed before anyone asked it to fork: the worker is started as a
    process of its own instead, and answers."""
    server = ForkServer(str(tiny_gguf))
    server.proc.kill()
    server.proc.wait()
    with forking(str(tiny_gguf), server):
        worker = StageWorker(WorkerConfig(str(tiny_gguf), reply_timeout_s=60))
    try:
        assert not isinstance(worker.proc, ForkedProcess)
        worker.ready()
        worker.load(Stage(0, 2))
        assert worker.alive and worker.loaded_stages == [str(Stage(0, 2))]
    finally:
        worker.close()


def test_a_fork_server_on_a_file_that_is_no_model_exits_quietly(tmp_path: Any, capfd: Any) -> None:
    """The parent opens the file itself and reports what is wrong with it; the server only
    exits (no traceback of its own on the player's terminal)."""
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file")
    server = ForkServer(str(bad))
    server.close()
    assert server.wait(60) == 1
    assert "Traceback" not in capfd.readouterr().err

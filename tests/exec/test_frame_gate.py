"""The frame gate: hosted compute (threads here, a child process's layers) waits while the
game renders a frame, never longer than its cap, and the game's frame loop holds it."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import torch

from hive_core.base.stage import Stage
from hive_core.exec.frame_gate import FrameGate
from hive_core.exec.priority import compute_pool
from hive_core.exec.stage_host import StageHost
from hive_core.exec.stage_worker import StageWorker, WorkerConfig
from hive_core.exec.wire import hidden_bytes
from hive_core.protocol.inference import KvKind

PEER, SESSION = b"\x02" * 20, b"g" * 16


def test_wait_blocks_while_held_and_is_capped() -> None:
    gate = FrameGate(max_wait_s=5.0)
    try:
        assert not gate.held and gate.wait() == 0.0
        gate.hold()
        threading.Timer(0.2, gate.release).start()
        t0 = time.perf_counter()
        waited = gate.wait()
        assert 0.15 < time.perf_counter() - t0 < 4.0 and waited > 0.15 and not gate.held
        capped = FrameGate(max_wait_s=0.05)
        with capped.holding():
            t0 = time.perf_counter()
            capped.wait()  # the frame loop died holding it: compute still goes on
            assert time.perf_counter() - t0 < 2.0
        assert not capped.held
        capped.close()
    finally:
        gate.close()
    with pytest.raises(ValueError, match="max_wait_s"):
        FrameGate(max_wait_s=-1)
    gate.hold()  # closed: a frame loop that outlives the hive changes nothing, waits nothing
    assert gate.closed and not gate.held and gate.wait() == 0.0


def test_a_gated_pool_starts_jobs_only_between_frames() -> None:
    gate = FrameGate(max_wait_s=30.0)
    pool = compute_pool("gated", 0, gate)
    try:
        gate.hold()
        job = pool.submit(lambda: 42)
        time.sleep(0.3)
        assert not job.done()
        gate.release()
        assert job.result(timeout=10) == 42
    finally:
        pool.shutdown()
        gate.close()


def test_a_stage_host_waits_before_each_layer(tiny_file: Any) -> None:
    calls: list[int] = []
    host = StageHost(tiny_file, pause=lambda: calls.append(1))
    x = torch.randn(2, tiny_file.config.hidden)
    out, _ = host.step((PEER, SESSION, Stage(0, 3)), 0, 2, KvKind.FP32, hidden_bytes(x))
    assert len(calls) == 3  # one safe point per layer
    plain, _ = StageHost(tiny_file).step((PEER, SESSION, Stage(0, 3)), 0, 2, KvKind.FP32, hidden_bytes(x))
    assert out == plain  # waiting changes nothing computed


def test_a_child_worker_holds_its_layers_while_the_parent_renders(tiny_gguf: Any, tiny_file: Any) -> None:
    gate = FrameGate()
    worker = StageWorker(WorkerConfig(str(tiny_gguf), reply_timeout_s=60, gate_fd=gate.fd))
    try:
        worker.ready()
        x = torch.randn(2, tiny_file.config.hidden)
        key = (PEER, SESSION, Stage(0, tiny_file.config.n_layers))
        done: list[bytes] = []
        with gate.holding():
            t = threading.Thread(target=lambda: done.append(worker.step(key, 0, 2, KvKind.FP32,
                                                                        hidden_bytes(x))[0]))
            t.start()
            time.sleep(0.1 * (tiny_file.config.n_layers - 2))  # each layer waits up to 0.1 s
            assert not done  # still held back: the child sees the parent's flag
        t.join(timeout=30)
        plain, _ = StageHost(tiny_file).step(key, 0, 2, KvKind.FP32, hidden_bytes(x))
        assert done == [plain]
    finally:
        worker.close()
        gate.close()

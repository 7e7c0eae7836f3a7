"""Stage compute in a child process: the same answers as on threads, its framing refuses
garbage, its errors reach the asker as clear failures, and a dead worker fails fast."""

from __future__ import annotations

import asyncio
import io
import signal
from typing import Any

import pytest

from hive_core.base.stage import Part, Stage
from hive_core.exec import ClientConfig, Fault, generate_hive
from hive_core.exec.errors import ExecError
from hive_core.exec.hive import build_hive
from hive_core.exec.stage_host import StageHost, StepRefused
from hive_core.exec.stage_worker import (
    Op,
    StageWorker,
    Status,
    WorkerConfig,
    WorkerError,
    parse_reply,
    parse_step,
    read_frame,
    reply,
    serve,
    step_request,
    write_frame,
)
from hive_core.exec.wire import hidden_bytes
from hive_core.model.sampling import Sampler
from hive_core.protocol.inference import KvKind

PROMPT = [5, 9, 12, 7, 5, 9, 12, 33, 40, 11, 3]
PEER, SESSION = b"\x01" * 20, b"s" * 16


def test_frames_round_trip_and_garbage_is_refused() -> None:
    key = (PEER, SESSION, Stage(2, 4, Part.ATTENTION))
    body = step_request(key, 7, 2, KvKind.INT4, b"\x00" * 16)
    assert body[0] == Op.STEP
    assert parse_step(body) == (key, 7, 2, KvKind.INT4, b"\x00" * 16)
    assert parse_reply(reply(Status.REFUSED, 5, 0.25, b"why")) == (Status.REFUSED, 5, 0.25, b"why")
    with pytest.raises(WorkerError, match="unknown reply status"):
        parse_reply(bytes([9]) + reply(Status.OK)[1:])
    with pytest.raises(WorkerError, match="shorter than its header"):
        parse_reply(b"\x00")
    with pytest.raises(WorkerError, match="session key length"):
        parse_step(body[:15] + bytes([200]) + body[16:])
    buf = io.BytesIO()
    write_frame(buf, b"abc")
    buf.seek(0)
    assert read_frame(buf) == b"abc"
    with pytest.raises(WorkerError, match="exceeds the limit"):
        read_frame(io.BytesIO(b"\xff\xff\xff\xff"))
    with pytest.raises(EOFError):
        read_frame(io.BytesIO(b"\x05\x00\x00\x00ab"))


def test_the_worker_loop_answers_every_request_even_bad_ones(tiny_file: Any) -> None:
    host = StageHost(tiny_file)
    hidden = tiny_file.config.hidden
    inp = io.BytesIO()
    good = step_request((PEER, SESSION, Stage(0, 2)), 0, 3, KvKind.FP32, b"\x00" * (3 * hidden * 4))
    for body in (good,
                 step_request((PEER, SESSION, Stage(0, 2)), 9, 1, KvKind.FP32, b"\x00" * (hidden * 4)),
                 step_request((PEER, SESSION, Stage(0, 2)), 3, 1, KvKind.FP32, b"\x00" * 5),
                 bytes([Op.LOAD]) + b"\x00\x00\x09\x00\x07",  # an unknown part
                 b"\x77", b"", bytes([Op.PING])):
        write_frame(inp, body)
    inp.seek(0)
    out = io.BytesIO()
    serve(host, inp, out)
    out.seek(0)
    answers = [parse_reply(read_frame(out)) for _ in range(7)]
    assert answers[0][0] is Status.OK and len(answers[0][3]) == 3 * hidden * 4
    assert answers[1][:2] == (Status.REFUSED, 3) and b"rebuild" in answers[1][3]
    assert answers[2][0] is Status.FAILED and b"do not fit" in answers[2][3]
    assert [a[0] for a in answers[3:]] == [Status.FAILED] * 3 + [Status.OK]


async def test_process_backed_hive_answers_as_the_threaded_one(tiny_gguf: Any, tiny_file: Any) -> None:
    async def run(process: bool) -> tuple[list[int], Any]:
        hive = await build_hive(tiny_gguf, 4, replicas=2, spares=1, model=tiny_file,
                                stages=[Stage(0, 2), Stage(2, 4)], faults={1: Fault.parse("noise")},
                                compute_process=process, compute_nice=5 if process else 0,
                                client_config=ClientConfig(local_layers=0, local_tail_layers=0,
                                                           hedge_floor_s=60.0))
        try:
            assert all(isinstance(srv.host, StageWorker) == process for srv in hive.servers)
            s = hive.client.new_session()
            g = await asyncio.wait_for(generate_hive(s, PROMPT, max_new_tokens=5, context_length=64,
                                                     sampler=Sampler(1.0, seed=3)), 60)
            await s.finish()
            assert s.verified
            return g.new_ids, [list(hive.client.reputation.slashed), hive.servers[0].stats.loaded_stages]
        finally:
            await hive.close()

    threaded, process = await run(False), await run(True)
    assert process == threaded  # same tokens, the same liar slashed, same stages loaded


def test_worker_errors_are_clear_and_a_dead_worker_fails_fast(tiny_gguf: Any, tiny_file: Any) -> None:
    worker = StageWorker(WorkerConfig(str(tiny_gguf), reply_timeout_s=60))
    try:
        worker.ready()
        worker.load(Stage(0, 2))
        assert worker.loaded_stages == [str(Stage(0, 2))]
        hidden = tiny_file.config.hidden
        key = (PEER, SESSION, Stage(0, 2))
        with pytest.raises(StepRefused, match="rebuild") as refused:
            worker.step(key, 4, 1, KvKind.FP32, b"\x00" * (hidden * 4))
        assert refused.value.held == 0
        with pytest.raises(ExecError, match="do not fit"):
            worker.step(key, 0, 2, KvKind.FP32, b"\x00" * 12)
        x = __import__("torch").randn(3, hidden)
        out, took = worker.step(key, 0, 3, KvKind.FP32, hidden_bytes(x))
        local, _ = StageHost(tiny_file).step(key, 0, 3, KvKind.FP32, hidden_bytes(x))
        assert out == local and took > 0
        worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait()
        with pytest.raises(WorkerError, match="died"):
            worker.step(key, 3, 1, KvKind.FP32, b"\x00" * (hidden * 4))
        with pytest.raises(WorkerError, match="died"):
            worker.end(PEER, SESSION)  # at once: no second wait on a dead process
    finally:
        worker.close()

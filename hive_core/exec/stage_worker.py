"""Stage compute in a child process: a game's hosted shards off its interpreter lock.

A shard server in the game's process computes on threads that hold the interpreter's lock
between torch ops (dozens per layer, per token), so the frame loop waits on them, and a
low-priority thread holding the lock can be descheduled while the frame waits. With a
`StageWorker` the server's `StageHost` (weights, KV caches, faults) lives in a child
process at the compute priority instead; the server keeps links, sealing and signing, and
forwards each stage step over the child's stdin/stdout pipes. Inside `worker_fork.forking`
the child is forked from a fork server that imported torch and mapped the model once (its
first frame, a hello, carries its pid); elsewhere it is a process started on its own.

Frames are ``u32 length | body``, little-endian; bodies are fixed headers and raw bytes
(hidden states as float32 rows), never pickled objects. A reply is ``status u8 | held u32 |
compute_s f64 | payload``. A worker that dies or answers garbage fails every later call with
`WorkerError` at once; a step that takes longer than `reply_timeout_s` kills the worker.
"""

from __future__ import annotations

import argparse
import enum
import logging
import os
import select
import struct
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import BinaryIO, NoReturn

from hive_core.base.stage import Part, Stage
from hive_core.exec.errors import ExecError
from hive_core.exec.faults import Fault
from hive_core.exec.frame_gate import FrameGate
from hive_core.exec.stage_host import HostConfig, SessionKey, StageHost, StepRefused
from hive_core.exec.worker_fork import ForkedProcess, active, serve_forks
from hive_core.model.errors import ModelError
from hive_core.model.gguf_file import GGUFModelFile
from hive_core.model.packed_run import prepare_compute
from hive_core.protocol.inference import KvKind

logger = logging.getLogger(__name__)
_LEN = struct.Struct("<I")
_STAGE = struct.Struct("<HHB")
_STEP = struct.Struct("<IIBB")  # position, tokens, kv kind, key length
_EVICT = struct.Struct("<dd")
_REPLY = struct.Struct("<BId")
MAX_FRAME = 256 * 1024 * 1024  # a prefill of a long prompt on a wide model still fits
NODE_BYTES = 20


class Op(enum.IntEnum):
    """What the parent asks of the worker."""

    LOAD = 1  # stage: load its weights
    STEP = 2  # stage, position, tokens, kv, session key, hidden bytes: run one step
    END = 3  # peer + session id: forget its caches
    EVICT = 4  # idle seconds, monotonic now: drop idle sessions
    PING = 5  # nothing: answered once the worker is up (its imports done)


class Status(enum.IntEnum):
    """How the worker answered."""

    OK = 0
    REFUSED = 1  # StepRefused: `held` is the cache length, payload the reason
    FAILED = 2  # ExecError / ModelError: payload the reason
    BUG = 3  # any other exception: payload its type name


class WorkerError(ExecError):
    """The worker process died, hung, or broke the framing."""


# -- framing (pure) -------------------------------------------------------------------------


def stage_bytes(stage: Stage) -> bytes:
    return _STAGE.pack(stage.start, stage.end, int(stage.part))


def parse_stage(body: bytes, at: int = 0) -> Stage:
    start, end, part = _STAGE.unpack_from(body, at)
    try:
        return Stage(start, end, Part(part))
    except ValueError:
        raise WorkerError(f"unknown stage part {part}") from None


def step_request(key: SessionKey, position: int, tokens: int, kv: KvKind, raw: bytes) -> bytes:
    peer, session_id, stage = key
    ident = peer + session_id
    return (bytes((Op.STEP,)) + stage_bytes(stage)
            + _STEP.pack(position, tokens, int(kv), len(ident)) + ident + raw)


def parse_step(body: bytes) -> tuple[SessionKey, int, int, KvKind, bytes]:
    """The fields of a STEP body (after its op byte has been read as body[0])."""
    at = 1
    stage = parse_stage(body, at)
    at += _STAGE.size
    position, tokens, kv, n = _STEP.unpack_from(body, at)
    at += _STEP.size
    if n <= NODE_BYTES or at + n > len(body):
        raise WorkerError(f"bad session key length {n}")
    ident = body[at:at + n]
    return (ident[:NODE_BYTES], ident[NODE_BYTES:], stage), position, tokens, KvKind(kv), body[at + n:]


def reply(status: Status, held: int = 0, compute_s: float = 0.0, payload: bytes = b"") -> bytes:
    return _REPLY.pack(int(status), held, compute_s) + payload


def parse_reply(body: bytes) -> tuple[Status, int, float, bytes]:
    if len(body) < _REPLY.size:
        raise WorkerError(f"a reply of {len(body)} bytes is shorter than its header")
    status, held, compute_s = _REPLY.unpack_from(body)
    try:
        return Status(status), held, compute_s, body[_REPLY.size:]
    except ValueError:
        raise WorkerError(f"unknown reply status {status}") from None


def write_frame(out: BinaryIO, body: bytes) -> None:
    out.write(_LEN.pack(len(body)) + body)
    out.flush()


def read_exact(inp: BinaryIO, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = inp.read(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def read_frame(inp: BinaryIO) -> bytes:
    (n,) = _LEN.unpack(read_exact(inp, _LEN.size))
    if n > MAX_FRAME:
        raise WorkerError(f"frame of {n} bytes exceeds the limit of {MAX_FRAME}")
    return read_exact(inp, n)


# -- the parent's side ----------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerConfig:
    """How the child process is started."""

    model_path: str  # the GGUF file; the child maps it itself
    weights: str = "fp32"
    load_on_demand: bool = True
    max_sessions: int = 256
    fault: str = ""  # Fault spec (TEST TOOL), empty for none
    fault_seed: int = 0
    nice: int = 0  # the whole child runs at this OS priority
    threads: int = 1  # torch intra-op threads in the child
    reply_timeout_s: float = 300.0  # a step longer than this means a hung worker: killed
    gate_fd: int = -1  # a FrameGate's fd: the child waits on it before each layer (-1: none)
    allow_dequant: bool = False  # packed: dequantise a matrix no kernel here multiplies


class StageWorker:
    """A `StageHost` in a child process; the same calls, blocking (call off the event loop)."""

    def __init__(self, config: WorkerConfig) -> None:
        """Starts the child: forked from this context's fork server for the model
        (`hive_core.exec.worker_fork.forking`) if there is one, else a process of its own."""
        self.config = config
        self.loaded_stages: list[str] = []
        self.evicted = 0
        self._lock = threading.Lock()
        self._dead = ""
        args = [config.model_path, "--weights", config.weights,
                "--max-sessions", str(config.max_sessions), "--fault", config.fault,
                "--fault-seed", str(config.fault_seed), "--nice", str(config.nice),
                "--threads", str(config.threads)]
        if not config.load_on_demand:
            args.append("--no-load-on-demand")
        if config.allow_dequant:
            args.append("--allow-dequant")
        self.proc: subprocess.Popen[bytes] | ForkedProcess
        server = active(config.model_path)
        self._greeted = True  # a forked child says its pid before its first answer
        if server is not None:
            try:
                self.proc = server.spawn([*args, "--hello"], config.gate_fd)
                self._greeted = False
                return
            except OSError as exc:  # the fork server is gone: this worker starts on its own
                logger.warning("stage worker fork server unavailable (%s): starting a process", exc)
        fds: tuple[int, ...] = ()
        if config.gate_fd >= 0:
            args += ["--gate-fd", str(config.gate_fd)]
            fds = (config.gate_fd,)
        self.proc = subprocess.Popen([sys.executable, "-m", "hive_core.exec.stage_worker", *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
                                     pass_fds=fds)

    @property
    def alive(self) -> bool:
        return not self._dead and self.proc.poll() is None

    def _call(self, body: bytes) -> tuple[Status, int, float, bytes]:
        with self._lock:
            if self._dead:
                raise WorkerError(self._dead)
            stdin, stdout = self.proc.stdin, self.proc.stdout
            assert stdin is not None and stdout is not None
            try:
                if not self._greeted:
                    self._hello(stdout)  # type: ignore[arg-type]
                write_frame(stdin, body)  # type: ignore[arg-type]
                got = self._answer(stdout)  # type: ignore[arg-type]
            except (EOFError, OSError, ValueError, struct.error) as exc:
                code = self.proc.poll()
                # A forked worker's exit code is its fork server's to reap: it says only that it exited.
                self._fail(("stage worker died" if isinstance(self.proc, ForkedProcess)
                            else f"stage worker died (exit code {code})") if code is not None
                           else f"stage worker broke the pipe: {type(exc).__name__}: {exc}")
        status, held, _, payload = got
        if status is Status.REFUSED:
            raise StepRefused(payload.decode("utf-8", "replace"), held)
        if status is Status.FAILED:
            raise ExecError(payload.decode("utf-8", "replace"))
        if status is Status.BUG:
            raise ExecError(f"stage worker error: {payload.decode('utf-8', 'replace')}")
        return got

    def _answer(self, stdout: BinaryIO) -> tuple[Status, int, float, bytes]:
        ready, _, _ = select.select([stdout], [], [], self.config.reply_timeout_s)
        if not ready:
            self._fail(f"stage worker gave no answer in {self.config.reply_timeout_s:g} s")
        return parse_reply(read_frame(stdout))

    def _hello(self, stdout: BinaryIO) -> None:
        """A forked child's first frame: its pid, so it can be watched and killed."""
        status, pid, _, _ = self._answer(stdout)
        if status is not Status.OK or pid <= 0 or not isinstance(self.proc, ForkedProcess):
            self._fail("stage worker broke the pipe: no hello")
        self.proc.hello(pid)
        self._greeted = True

    def _fail(self, why: str) -> NoReturn:
        self._dead = why
        self.proc.kill()
        raise WorkerError(why)

    def ready(self) -> None:
        """Block until the child is up (its imports and model mapping done)."""
        self._call(bytes((Op.PING,)))

    def load(self, stage: Stage) -> None:
        _, _, _, name = self._call(bytes((Op.LOAD,)) + stage_bytes(stage))
        if name:
            self.loaded_stages.append(name.decode("utf-8", "replace"))

    def step(self, key: SessionKey, position: int, tokens: int, kv: KvKind,
             raw: bytes) -> tuple[bytes, float]:
        _, _, compute_s, out = self._call(step_request(key, position, tokens, kv, raw))
        if len(out) != len(raw):
            self._fail(f"stage worker answered {len(out)} bytes for {len(raw)}")
        return out, compute_s

    def end(self, peer: bytes, session_id: bytes) -> None:
        self._call(bytes((Op.END,)) + peer + session_id)

    def evict_idle(self, idle_s: float, now: float) -> int:
        _, count, _, _ = self._call(bytes((Op.EVICT,)) + _EVICT.pack(idle_s, now))
        self.evicted += count
        return count

    def close(self, wait_s: float = 2.0) -> None:
        """Stop the child (its caches go with it); calls after this fail. Blocks up to
        `wait_s` while a step in flight ends, then kills it."""
        self._dead = self._dead or "stage worker closed"
        if self.proc.stdin is not None:
            self.proc.stdin.close()  # the child exits at end of input
        try:
            self.proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# -- the child's side -----------------------------------------------------------------------


def serve(host: object, inp: BinaryIO, out: BinaryIO) -> None:
    """Answer frames from `inp` on `out` until `inp` closes (host: a `StageHost`)."""
    assert isinstance(host, StageHost)
    while True:
        try:
            body = read_frame(inp)
        except EOFError:
            return
        try:
            op = Op(body[0]) if body else None
            if op is Op.STEP:
                key, position, tokens, kv, raw = parse_step(body)
                data, compute_s = host.step(key, position, tokens, kv, raw)
                answer = reply(Status.OK, 0, compute_s, data)
            elif op is Op.LOAD:
                before = len(host.loaded_stages)
                host.load(parse_stage(body, 1))
                name = host.loaded_stages[-1] if len(host.loaded_stages) > before else ""
                answer = reply(Status.OK, payload=name.encode())
            elif op is Op.END:
                host.end(body[1:1 + NODE_BYTES], body[1 + NODE_BYTES:])
                answer = reply(Status.OK)
            elif op is Op.PING:
                answer = reply(Status.OK)
            elif op is Op.EVICT:
                idle_s, now = _EVICT.unpack_from(body, 1)
                answer = reply(Status.OK, host.evict_idle(idle_s, now))
            else:
                answer = reply(Status.FAILED, payload=b"unknown request")
        except StepRefused as exc:
            answer = reply(Status.REFUSED, exc.held, payload=str(exc)[:256].encode())
        except (ExecError, ModelError, ValueError, struct.error) as exc:
            answer = reply(Status.FAILED, payload=str(exc)[:256].encode())
        except Exception as exc:  # a bug answers, never leaves the parent waiting
            logger.exception("stage worker request failed")
            answer = reply(Status.BUG, payload=type(exc).__name__.encode())
        write_frame(out, answer)


def main(argv: list[str] | None = None, model: GGUFModelFile | None = None) -> None:
    """Run a worker (or, with ``--fork-server FD``, a fork server for the model's workers).
    `model`: the model file already mapped (a forked worker's, from its server)."""
    parser = argparse.ArgumentParser(description="stage compute for a shard server (a child process)")
    parser.add_argument("model")
    parser.add_argument("--weights", default="fp32")
    parser.add_argument("--max-sessions", type=int, default=256)
    parser.add_argument("--no-load-on-demand", action="store_true")
    parser.add_argument("--allow-dequant", action="store_true")
    parser.add_argument("--fault", default="")
    parser.add_argument("--fault-seed", type=int, default=0)
    parser.add_argument("--nice", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--gate-fd", type=int, default=-1,
                        help="an inherited FrameGate fd: wait on it before each layer")
    parser.add_argument("--hello", action="store_true",
                        help="first write a frame carrying this process's pid (a forked worker)")
    parser.add_argument("--fork-server", type=int, default=-1, metavar="FD",
                        help="be a fork server on this Unix socket (hive_core.exec.worker_fork)")
    args = parser.parse_args(argv)
    if args.fork_server >= 0:
        _fork_server(args.fork_server, args.model)
        return
    # Frames go out on a private copy of stdout; anything a library prints goes to stderr.
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    if args.hello:
        write_frame(out, reply(Status.OK, os.getpid()))
    if args.nice:
        os.nice(args.nice)  # before torch starts threads: they inherit it

    prepare_compute(max(1, args.threads))
    if model is None or str(model.path) != str(args.model):
        model = GGUFModelFile(args.model)
    host = StageHost(model, HostConfig(
        weights=args.weights, load_on_demand=not args.no_load_on_demand,
        max_sessions=args.max_sessions, fault=Fault.parse(args.fault) if args.fault else None,
        fault_seed=args.fault_seed, allow_dequant=args.allow_dequant), pause=FrameGate(args.gate_fd).wait if args.gate_fd >= 0 else None)
    serve(host, sys.stdin.buffer, out)


def _fork_server(sock_fd: int, path: str) -> None:
    """Map the model and load our kernel library here once; fork a worker per request."""
    from hive_core import native

    try:
        shared = GGUFModelFile(path)
    except (ModelError, OSError) as exc:  # the parent opens the file too and reports it
        logger.info("fork server: %s", exc)
        sys.exit(1)
    native.ops()  # loaded before the forks: every worker inherits it (None where not built)
    serve_forks(sock_fd, lambda argv: main(argv, model=shared))


if __name__ == "__main__":
    main()

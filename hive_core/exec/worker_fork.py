"""A fork server for stage workers: torch imported and the model file mapped once, then forked.

A stage worker (`hive_core.exec.stage_worker`) spent about 1.5 CPU seconds of its start
importing torch and our model code, and under a second loading its stage (packed weights are
pages of the mapped file). The game starts five of them at once on a machine with two cores,
so the hive was ready only after five imports' worth of CPU. A `ForkServer` is one process that
imports those modules, maps the model file and loads our kernel library once; each worker is
then forked from it and shares those pages. The fork comes before any torch computation in the
server (no OpenMP threads exist yet), and each worker sets its own priority and torch threads
after it, as a started worker does.

The parent asks for a worker by sending its argument list (JSON) and its pipe ends (and the
frame gate's fd) over a Unix socket pair; it never waits for the server: the worker's first
frame on its stdout is a hello carrying its pid, read before the first request. A worker forked
this way is not the parent's child, so it is watched through a pidfd. Where Linux pidfds or
`fork` are missing, `ForkServer.available()` is False and workers are started one process each.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import BinaryIO

logger = logging.getLogger(__name__)
MAX_REQUEST = 64 * 1024  # one worker's argument list, JSON
_ACTIVE: contextvars.ContextVar[ForkServer | None] = contextvars.ContextVar("fork_server", default=None)


class ForkServer:
    """The server process; `spawn` a worker per call, `close` once no more are needed."""

    def __init__(self, model_path: str) -> None:
        self.model_path = model_path
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._sock = ours
        self._reaper: threading.Thread | None = None
        cmd = [sys.executable, "-m", "hive_core.exec.stage_worker", model_path,
               "--fork-server", str(theirs.fileno())]
        try:
            # One thread when it forks: numpy's BLAS would otherwise start a helper thread at
            # import (the workers compute with torch; the server computes nothing).
            env = {**os.environ, "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1")}
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, pass_fds=(theirs.fileno(),),
                                         env=env)
        finally:
            theirs.close()

    @staticmethod
    def available() -> bool:
        return hasattr(os, "fork") and hasattr(os, "pidfd_open") and hasattr(socket, "send_fds")

    def spawn(self, argv: list[str], gate_fd: int = -1) -> ForkedProcess:
        """Ask for a worker run as `stage_worker.main(argv)` (plus ``--gate-fd`` if `gate_fd`
        >= 0); returns at once, before the server has forked it."""
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        fds = [to_child_r, from_child_w] + ([gate_fd] if gate_fd >= 0 else [])
        try:
            socket.send_fds(self._sock, [json.dumps(argv).encode()], fds)
        except OSError:
            for fd in (to_child_w, from_child_r):
                os.close(fd)
            raise
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        return ForkedProcess(os.fdopen(to_child_w, "wb", buffering=0),
                             os.fdopen(from_child_r, "rb", buffering=0))

    def close(self) -> None:
        """No more workers: the server forks those already asked for, then exits (reaped by a
        thread here: it may still be importing, and the caller may be an event loop)."""
        self._sock.close()
        if self._reaper is None:
            self._reaper = threading.Thread(target=self.proc.wait, name="fork server reaper",
                                            daemon=True)
            self._reaper.start()

    def wait(self, timeout_s: float = 30.0) -> int:
        """Wait for the server process to exit (after `close`); its exit code."""
        return self.proc.wait(timeout=timeout_s)


class ForkedProcess:
    """A forked worker, seen the way `subprocess.Popen` shows a child: stdin, stdout, poll,
    kill, wait. Its pid comes in its hello frame (`hello`)."""

    def __init__(self, stdin: BinaryIO, stdout: BinaryIO) -> None:
        self.stdin: BinaryIO | None = stdin
        self.stdout: BinaryIO | None = stdout
        self.pid = 0
        self._pidfd = -1
        self.returncode: int | None = None

    def hello(self, pid: int) -> None:
        """The worker said its pid: watch it from now on."""
        self.pid = pid
        try:
            self._pidfd = os.pidfd_open(pid)
        except OSError:  # it has exited already
            self.returncode = -1

    def poll(self) -> int | None:
        """None while it runs; -1 once it has exited (its exit code is its server's to reap)."""
        if self.returncode is None and self._pidfd >= 0:
            ready, _, _ = select.select([self._pidfd], [], [], 0)
            if ready:
                self._exited()
        return self.returncode

    def kill(self) -> None:
        if self._pidfd >= 0 and self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        elif self.stdin is not None and not self.stdin.closed:
            self.stdin.close()  # no pid yet: the worker ends at the end of its input

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None and self._pidfd >= 0:
            ready, _, _ = select.select([self._pidfd], [], [], timeout)
            if not ready:
                raise subprocess.TimeoutExpired("stage worker", timeout or 0.0)
            self._exited()
        return -1 if self.returncode is None else self.returncode

    def _exited(self) -> None:
        self.returncode = -1
        os.close(self._pidfd)
        self._pidfd = -1


@contextlib.contextmanager
def forking(model_path: str, server: ForkServer | None = None) -> Iterator[ForkServer | None]:
    """Stage workers for `model_path` made in the body are forked from one server: `server`
    (one started early, so that it imports while its parent does other work) or a new one
    (None where fork servers are not available). It exits once it has forked them."""
    if server is not None and server.model_path != model_path:
        server.close()
        server = None
    if server is None and ForkServer.available():
        server = ForkServer(model_path)
    token = _ACTIVE.set(server)
    try:
        yield server
    finally:
        _ACTIVE.reset(token)
        if server is not None:
            server.close()


def active(model_path: str) -> ForkServer | None:
    """The fork server for `model_path` in this context, if there is one."""
    server = _ACTIVE.get()
    return server if server is not None and server.model_path == model_path else None


def serve_forks(sock_fd: int, run: Callable[[list[str]], None]) -> None:
    """The server's loop: for each request, fork a worker that runs `run(argv)` on the pipes it
    was sent as stdin and stdout, until the parent closes its end."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the workers
    sock = socket.socket(fileno=sock_fd)
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(sock, MAX_REQUEST, 3)
        except OSError:
            return
        if not msg:
            for fd in fds:
                os.close(fd)
            return  # the parent closed: no more workers
        if len(fds) < 2:
            logger.error("fork server: a request without its pipes")
            continue
        argv = [str(a) for a in json.loads(msg)]
        if len(fds) == 3:
            argv += ["--gate-fd", str(fds[2])]
        if os.fork() == 0:
            _child(sock, fds, argv, run)
        for fd in fds:
            os.close(fd)


def _child(sock: socket.socket, fds: list[int], argv: list[str], run: Callable[[list[str]], None]) -> None:
    """In a forked worker: take the pipes as stdin and stdout, run, and never return."""
    code = 1
    try:
        sock.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.dup2(fds[0], 0)
        os.dup2(fds[1], 1)
        os.close(fds[0])
        os.close(fds[1])
        run(argv)
        code = 0
    except BaseException:
        logger.exception("forked stage worker failed")
    finally:
        sys.stderr.flush()
        os._exit(code)

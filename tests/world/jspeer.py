"""Drives tests/js/yjs_peer.mjs (real Yjs + y-protocols under Node) over length-prefixed pipes."""

from __future__ import annotations

import json
import queue
import shutil
import struct
import subprocess
import threading
from pathlib import Path
from typing import Any, Self

import pytest

JS_DIR = Path(__file__).resolve().parents[1] / "js"


def require_node() -> str:
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "yjs").is_dir():
        pytest.skip("node or tests/js/node_modules missing: run ./setup.sh --test")
    return node


class JsPeer:
    """One Node process holding a Y.Doc; frames are y-protocols messages or test commands."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([require_node(), str(JS_DIR / "yjs_peer.mjs")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self._frames: queue.Queue[bytes | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            head = self.proc.stdout.read(4)
            if len(head) < 4:
                self._frames.put(None)
                return
            (n,) = struct.unpack(">I", head)
            self._frames.put(self.proc.stdout.read(n))

    def send(self, message: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(struct.pack(">I", len(message)) + message)
        self.proc.stdin.flush()

    def recv(self, timeout: float = 10.0) -> bytes:
        frame = self._frames.get(timeout=timeout)
        if frame is None:
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise AssertionError(f"node peer exited: {err}")
        return frame

    def command(self, op: str, **args: Any) -> Any:
        """Run a test command; returns its JSON answer. y-protocols frames sent before the
        answer are kept in `self.pending`."""
        self.send(bytes([100]) + json.dumps({"op": op, **args}).encode())
        while True:
            frame = self.recv()
            if frame[:1] == bytes([101]):
                return json.loads(frame[1:])
            self.pending.append(frame)

    pending: list[bytes]

    def __enter__(self) -> Self:
        self.pending = []
        return self

    def __exit__(self, *_: object) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()

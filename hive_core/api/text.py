"""Answer text as tokens arrive: decoded incrementally and cut at the first stop sequence.

Text that could be the start of a stop sequence is held back until the next tokens show it
is not, so a stream never sends a client the beginning of a stop sequence it asked to stop at.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class StopText:
    """Feed it token ids (`push`), then `finish()`; each returns the text now safe to send."""

    def __init__(self, tokenizer: Any, stops: Sequence[str] = ()) -> None:
        self._stream = tokenizer.stream()
        self._stop_ids = frozenset(tokenizer.stop_ids)
        self._stops = tuple(stops)
        self._held = ""
        self.text = ""  # everything released so far
        self.stopped = False  # a stop sequence was found: the answer ends before it

    def push(self, token: int) -> str:
        if self.stopped or token in self._stop_ids:  # end-of-turn tokens carry no text
            return ""
        return self._release(self._stream.push(token), final=False)

    def finish(self) -> str:
        return "" if self.stopped else self._release(self._stream.finish(), final=True)

    def _release(self, piece: str, *, final: bool) -> str:
        buf = self._held + piece
        hits = [i for i in (buf.find(s) for s in self._stops) if i >= 0]
        if hits:
            out, self._held, self.stopped = buf[:min(hits)], "", True
        else:
            keep = 0 if final else self._prefix_tail(buf)
            out, self._held = buf[:len(buf) - keep], buf[len(buf) - keep:]
        self.text += out
        return out

    def _prefix_tail(self, buf: str) -> int:
        """Length of the longest end of `buf` that begins some stop sequence."""
        best = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(buf)), best, -1):
                if buf.endswith(stop[:n]):
                    best = n
                    break
        return best

"""What `generate` and `ask` share: the prompt and sampling flags, and streaming the answer."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_prompt_arguments(parser: argparse.ArgumentParser) -> None:
    """PROMPT, --raw, --max-new-tokens, --temperature, --top-p, --seed, --model."""
    parser.add_argument("prompt", help="the prompt text")
    parser.add_argument("--raw", action="store_true", help="feed the prompt as is, no chat template")
    parser.add_argument("--max-new-tokens", type=int, default=128, metavar="N",
                        help="stop after N new tokens (default 128)")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="sampling temperature; 0 (default) is greedy")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1)")
    parser.add_argument("--seed", type=int, default=None, help="seed for sampling")
    parser.add_argument("--model", default=None, metavar="PATH", help="a llama-architecture GGUF file")


class StreamedText:
    """Decodes new tokens as they come and echoes the text unless `quiet` (``--json``).

    Call it with each token; `finish()` returns the whole text and keeps the last piece the
    stream was holding back in `tail`, for the caller to print when its work is done.
    """

    def __init__(self, tokenizer: Any, quiet: bool) -> None:
        self._stream = tokenizer.stream()
        self._pieces: list[str] = []
        self.quiet = quiet
        self.tail = ""

    def __call__(self, token: int) -> None:
        piece = self._stream.push(token)
        self._pieces.append(piece)
        if not self.quiet and piece:
            sys.stdout.write(piece)
            sys.stdout.flush()

    def finish(self) -> str:
        self.tail = self._stream.finish()
        self._pieces.append(self.tail)
        return "".join(self._pieces)

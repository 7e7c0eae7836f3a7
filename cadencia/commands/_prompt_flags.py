"""What `generate` and `ask` share: the prompt and sampling flags, and streaming the answer."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from hive_core.mesh.runner import number, text

MAX_NEW_TOKENS = 1_000_000  # what the flag takes at all; the model's context bounds it further


def add_prompt_arguments(parser: argparse.ArgumentParser) -> None:
    """PROMPT, --raw, --max-new-tokens, --temperature, --top-p, --seed, --model."""
    parser.add_argument("prompt", type=text("the prompt", empty=True),
                        help="the prompt text (UTF-8)")
    parser.add_argument("--raw", action="store_true", help="feed the prompt as is, no chat template")
    parser.add_argument("--max-new-tokens", type=number(int, 1, MAX_NEW_TOKENS), default=128,
                        metavar="N", help="stop after N new tokens (default 128; the prompt and "
                        "the answer must fit the model's context)")
    parser.add_argument("--temperature", type=number(float, 0, 100), default=0.0,
                        help="sampling temperature; 0 (default) is greedy")
    parser.add_argument("--top-p", type=number(float, 0.001, 1), default=1.0,
                        help="nucleus sampling mass (default 1)")
    parser.add_argument("--seed", type=number(int, 0, 2**63 - 1), default=None,
                        help="seed for sampling")
    parser.add_argument("--model", default=None, metavar="PATH", help="a llama-architecture GGUF file")


def check_room(max_new_tokens: int, prompt_tokens: int, context: int) -> None:
    """PromptError unless the prompt and `max_new_tokens` fit the model's context."""
    from hive_core.model.errors import PromptError

    if prompt_tokens >= context:
        raise PromptError(f"the prompt is {prompt_tokens} tokens; the model's context is "
                          f"{context} tokens")
    if prompt_tokens + max_new_tokens > context:
        room = context - prompt_tokens
        raise PromptError(
            f"--max-new-tokens {max_new_tokens} does not fit: the model's context holds "
            f"{context} tokens and the prompt takes {prompt_tokens}"
            + (f", so at most {room} new tokens" if room > 0 else ", leaving no room"))


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

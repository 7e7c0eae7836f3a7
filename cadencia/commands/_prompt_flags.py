"""The prompt and sampling flags that `generate` and `ask` share, so both accept the same."""

from __future__ import annotations

import argparse


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

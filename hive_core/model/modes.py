"""Weights modes: how a shard holds its matrices, the mode commands use unless told, the flag.

Light on purpose (no torch): command-line parsers import it for ``--help``.
"""

from __future__ import annotations

import argparse

# packed: Q4_1/Q8_0 matrices stay in their GGUF blocks for our CPU kernel (torch's int4
# kernel where ours cannot be built; other block types are dequantised to the compute
# dtype); fp32: every matrix dequantised to the compute dtype, the reference that matches
# transformers; bf16: matrices stored as bfloat16.
WEIGHT_MODES: tuple[str, ...] = ("packed", "fp32", "bf16")
# What `generate`, `ask`, `node`, `hive up` and the game use when no --weights is given:
# packed, since its products carry float32 precision (greedy tokens equal fp32's on the fixed
# prompts) and it decodes more than twice as fast in under half the memory. Library calls
# (ShardExecutor.load, build_hive, ServerConfig) take their mode explicitly, default fp32.
DEFAULT_WEIGHTS = "packed"


def add_weights_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--weights {packed,fp32,bf16}`` with the default above; `what` says whose weights."""
    parser.add_argument(
        "--weights", choices=WEIGHT_MODES, default=DEFAULT_WEIGHTS,
        help=f"how {what} hold the model's matrices: packed (GGUF Q4_1/Q8_0 blocks kept as "
             "they are, multiplied in float32: less memory, faster), fp32 (dequantised: the "
             "reference) or "
             f"bf16 (default {DEFAULT_WEIGHTS}). Replicas are compared only with replicas of "
             "the same mode")

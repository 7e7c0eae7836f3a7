"""A synthetic byte-level BPE vocabulary of any size, for random-weight GGUFs of real shapes.

Token ids 0..255 are the byte-level alphabet, every later regular token is an earlier token
plus one character with its merge ranked in id order (a valid BPE: every merge's halves and
result are in the vocabulary), and the last ids are Llama-3's special tokens. Text encodes
and decodes through it like through any GGUF ``gpt2`` vocabulary; it just has no meaning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hive_core.model.quant.formats import QuantizeError

CONTROL, NORMAL = 3, 1  # llama.cpp token types

# Llama-3's named special tokens at their offsets from the first special id; the rest of
# the special range is <|reserved_special_token_N|>, numbered in id order.
_NAMED = {0: "<|begin_of_text|>", 1: "<|end_of_text|>", 6: "<|start_header_id|>",
          7: "<|end_header_id|>", 9: "<|eot_id|>"}
BOS_OFFSET, EOT_OFFSET = 0, 9

# Meta's Llama-3 instruct template: a header per message, <|eot_id|> after each.
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """Token texts, llama.cpp token types and BPE merges, ready for GGUF metadata."""

    tokens: list[str]
    types: list[int]
    merges: list[str]
    bos_id: int
    eot_id: int


def byte_alphabet() -> list[str]:
    """The 256 characters byte-level BPE spells bytes with, in byte order."""
    # GPT-2's map: printable Latin-1 bytes stand for themselves, the other 68 bytes take
    # the code points from 256 upwards in byte order.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 256 + 256 - len(printable)))
    keep = set(printable)
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


def synthetic_vocab(size: int, n_special: int = 256, seed: int = 0) -> Vocabulary:
    """`size` tokens: 256 bytes, ``size - 256 - n_special`` merged tokens, `n_special`
    Llama-3 special tokens at the end (at least the ten up to ``<|eot_id|>``)."""
    if n_special < EOT_OFFSET + 1:
        raise QuantizeError(f"need at least {EOT_OFFSET + 1} special tokens, got {n_special}")
    n_regular = size - n_special
    if n_regular < 256:
        raise QuantizeError(f"a vocabulary of {size} with {n_special} specials has no room for "
                         "the 256 byte tokens")
    alphabet = byte_alphabet()
    tokens = list(alphabet)
    merges: list[str] = []
    seen = set(tokens)
    rng = np.random.default_rng(seed)
    while len(tokens) < n_regular:
        # Draw in batches (numpy is fast, the loop only checks and appends); a string already
        # present is skipped and redrawn, so every token is unique.
        need = n_regular - len(tokens)
        lefts = (rng.random(2 * need) * len(tokens)).astype(np.int64)
        rights = rng.integers(0, 256, 2 * need)
        for a, b in zip(lefts.tolist(), rights.tolist(), strict=True):
            text = tokens[a] + alphabet[b]
            if text in seen:
                continue
            seen.add(text)
            tokens.append(text)
            merges.append(f"{tokens[a]} {alphabet[b]}")
            if len(tokens) == n_regular:
                break
    reserved = 0
    for i in range(n_special):
        name = _NAMED.get(i)
        if name is None:
            name = f"<|reserved_special_token_{reserved}|>"
            reserved += 1
        tokens.append(name)
    types = [NORMAL] * n_regular + [CONTROL] * n_special
    return Vocabulary(tokens, types, merges, n_regular + BOS_OFFSET, n_regular + EOT_OFFSET)

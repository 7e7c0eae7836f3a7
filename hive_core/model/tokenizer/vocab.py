"""A GGUF file's vocabulary (`tokenizer.ggml.*`) read and checked, before any tokenizer is built."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hive_core.model.errors import TokenizerError
from hive_core.model.gguf_file import GGUFModelFile

# llama.cpp's token types (`tokenizer.ggml.token_type`).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


@dataclass(slots=True)
class Vocabulary:
    """The arrays and flags a tokenizer is built from; scratch, dropped once it is built."""

    kind: str  # tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    tokens: list[str]
    types: list[int]
    scores: list[float] | None  # SentencePiece: a piece's priority in merging
    merges: list[str] | None  # BPE: "left right", best first
    pre: str | None  # tokenizer.ggml.pre: how text is split before BPE
    meta: Mapping[str, Any]

    def ids_of(self, wanted: int) -> list[int]:
        return [i for i, t in enumerate(self.types) if t == wanted]

    def special_id(self, key: str, default: int | None = None) -> int | None:
        """`tokenizer.ggml.<key>` when it names a token of this vocabulary, else `default`."""
        value = self.meta.get(f"tokenizer.ggml.{key}", default)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(self.tokens):
            return None
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.meta.get(f"tokenizer.ggml.{key}", default)
        return value if isinstance(value, bool) else default


def read_vocabulary(file: GGUFModelFile) -> Vocabulary:
    """The vocabulary of `file`, each array checked against the token list."""
    meta = file.metadata
    kind = meta.get("tokenizer.ggml.model")
    if kind not in ("gpt2", "llama"):
        raise TokenizerError(
            f"tokenizer {kind!r} is not supported: only byte-level BPE ('gpt2') and "
            "SentencePiece ('llama') GGUF vocabularies are"
        )
    tokens = file.array("tokenizer.ggml.tokens")
    if not tokens or not all(type(t) is str for t in tokens):
        raise TokenizerError("the GGUF has no vocabulary (tokenizer.ggml.tokens is missing or not strings)")
    types = file.array("tokenizer.ggml.token_type") or [NORMAL] * len(tokens)
    if len(types) != len(tokens) or not all(type(t) is int for t in types):
        raise TokenizerError(
            f"tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens, or non-integers"
        )
    scores = file.array("tokenizer.ggml.scores")
    if scores is not None and (len(scores) != len(tokens)
                               or not all(type(s) in (int, float) for s in scores)):
        raise TokenizerError(f"tokenizer.ggml.scores has {len(scores)} entries for {len(tokens)} tokens")
    merges = file.array("tokenizer.ggml.merges")
    if merges is not None and not all(type(m) is str for m in merges):
        raise TokenizerError("tokenizer.ggml.merges are not strings")
    pre = meta.get("tokenizer.ggml.pre")
    if pre is not None and not isinstance(pre, str):
        raise TokenizerError(f"tokenizer.ggml.pre = {pre!r} is not a name")
    return Vocabulary(kind, tokens, types, scores, merges, pre, meta)

"""Byte-level BPE (`tokenizer.ggml.model = gpt2`): GPT-2's byte alphabet, the file's merges, and
the pre-tokenizer its `tokenizer.ggml.pre` names (Llama-3, Qwen2, SmolLM, GPT-2...), built with
the `tokenizers` library.

The split patterns are llama.cpp's (llama-vocab.cpp), keyed by the names llama.cpp accepts; a
name neither knows is refused rather than guessed, since the wrong split gives plausible but
different ids. Llama-3's family also sets `ignore_merges`: a pre-token that is itself in the
vocabulary is taken whole, not rebuilt by merges (llama.cpp does so; transformers' GGUF loader
does not, and differs from llama.cpp on such words).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from hive_core.model.errors import TokenizerError
from hive_core.model.tokenizer.vocab import CONTROL, USER_DEFINED, Vocabulary

if TYPE_CHECKING:
    from tokenizers import Tokenizer

GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
TEKKEN_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
GPT4O_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass(frozen=True, slots=True)
class PreTokenizer:
    """How one family splits text before BPE."""

    splits: tuple[str, ...]  # regexes applied in turn, each match its own pre-token
    ignore_merges: bool = False  # a pre-token found whole in the vocabulary is one token
    add_bos: bool = False  # llama.cpp's default when the file has no add_bos_token key


_LLAMA3 = PreTokenizer((LLAMA3_SPLIT,), ignore_merges=True, add_bos=True)
_GPT2 = PreTokenizer((GPT2_SPLIT,))
_DIGITS = PreTokenizer((r"\p{N}", GPT2_SPLIT))  # each digit its own pre-token, then GPT-2's split
_QWEN2 = PreTokenizer((QWEN2_SPLIT,))
PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral",
                     "midm-2.0", "lfm2", "jina-v5-nano"), _LLAMA3),
    **dict.fromkeys(("dbrx", "smaug-bpe"), PreTokenizer((LLAMA3_SPLIT,))),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2",
                     "hunyuan"), _QWEN2),
    **dict.fromkeys(("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone",
                     "minerva-7b", "mellum2"), _DIGITS),
    # A file without the key gets GPT-2's split, as transformers gives it.
    **dict.fromkeys(("default", "gpt2", "gpt-2", "phi-2", "mpt", "olmo", "jais", "trillion",
                     "exaone4", "granite-docling", "jina-es", "jina-de", "gigachat", "mellum",
                     "a.x-4.0", "modern-bert"), _GPT2),
    "tekken": PreTokenizer((TEKKEN_SPLIT,), ignore_merges=True, add_bos=True),
    **dict.fromkeys(("gpt-4o", "llama4", "kanana2"), PreTokenizer((GPT4O_SPLIT,))),
}


@cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


def pre_tokenizer(vocab: Vocabulary) -> PreTokenizer:
    name = vocab.pre or "default"
    found = PRE_TOKENIZERS.get(name)
    if found is None:
        raise TokenizerError(
            f"unknown pre-tokenizer {name!r} (tokenizer.ggml.pre): its text split is not known "
            "here, and another would give wrong token ids"
        )
    return found


def build_bpe(vocab: Vocabulary) -> tuple[Tokenizer, PreTokenizer]:
    """The `tokenizers` BPE of a byte-level vocabulary, control and user-defined tokens added."""
    from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers

    if vocab.merges is None:
        raise TokenizerError("the byte-level BPE vocabulary has no merges (tokenizer.ggml.merges)")
    pre = pre_tokenizer(vocab)
    tokens, alphabet = vocab.tokens, set(bytes_to_unicode().values())
    spell = bytes_to_unicode()
    # A token written outside the byte alphabet is looked up by its bytes' spelling.
    ids = {t if set(t) <= alphabet else "".join(spell[b] for b in t.encode("utf-8")): i
           for i, t in enumerate(tokens)}
    same = tokens.__getitem__  # merge halves share the token list's strings: not 98k copies
    pairs = [(same(ids[a]) if a in ids else a, same(ids[b]) if b in ids else b)
             for a, sep, b in (m.partition(" ") for m in vocab.merges) if sep]
    try:  # tokenizers raises a bare Exception for a merge of tokens not in the vocabulary
        tok = Tokenizer(models.BPE(vocab=ids, merges=pairs, fuse_unk=False,
                                   ignore_merges=pre.ignore_merges))
    except Exception as exc:  # noqa: BLE001
        raise TokenizerError(f"the GGUF's BPE vocabulary is inconsistent: {exc}") from None
    del pairs
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        *(pre_tokenizers.Split(Regex(s), behavior="isolated") for s in pre.splits),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    # Control tokens (``<|im_end|>``) match whole in text. One spelled outside the byte
    # alphabet is a llama.cpp mislabel that transformers skips too.
    tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                            for i in vocab.ids_of(CONTROL) if set(tokens[i]) <= alphabet])
    user = [AddedToken(tokens[i], special=False, normalized=False)
            for i in vocab.ids_of(USER_DEFINED) if set(tokens[i]) <= alphabet]
    if user:
        tok.add_tokens(user)
    return tok, pre


def bpe_token_bytes(vocab: Vocabulary) -> Iterator[bytes]:
    """Bytes each token stands for, in id order: control tokens none."""
    decoder = {c: b for b, c in bytes_to_unicode().items()}
    for t, kind in zip(vocab.tokens, vocab.types, strict=True):
        if kind == CONTROL:
            yield b""
        elif all(c in decoder for c in t):
            yield bytes(decoder[c] for c in t)
        else:
            yield t.encode("utf-8")

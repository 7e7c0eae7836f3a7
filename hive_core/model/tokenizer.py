"""The tokenizer described by a GGUF file's metadata (byte-level BPE), built with `tokenizers`."""

from __future__ import annotations

import codecs
from array import array
from collections.abc import Iterable, Sequence
from functools import cache
from itertools import accumulate

from hive_core.model.errors import UnsupportedModelError
from hive_core.model.gguf_file import GGUFModelFile

CONTROL, USER_DEFINED = 3, 4  # llama.cpp token types

# llama.cpp's pre-tokenizer splits (llama-vocab.cpp), keyed by `tokenizer.ggml.pre`.
_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Vocabularies trained with each digit its own pre-token (HF `Digits(individual_digits=True)`).
_DIGITS_FIRST = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"}
_LLAMA3_LIKE = {"llama3", "llama-v3", "llama-bpe", "falcon3", "smaug-bpe", "dbrx"}


@cache
def _bytes_to_unicode() -> dict[int, str]:
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


class GGUFTokenizer:
    """Encode text to ids and ids back to bytes/text, as the model's own tokenizer does."""

    def __init__(self, file: GGUFModelFile) -> None:
        from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

        meta = file.metadata
        kind = meta.get("tokenizer.ggml.model")
        if kind != "gpt2":
            raise UnsupportedModelError(
                f"tokenizer {kind!r} is not supported: only byte-level BPE ('gpt2') GGUF vocabularies"
            )
        tokens = file.array("tokenizer.ggml.tokens") or []
        types = file.array("tokenizer.ggml.token_type") or [1] * len(tokens)
        if (not tokens or len(types) != len(tokens) or not all(type(t) is str for t in tokens)
                or not all(type(t) is int for t in types)):
            raise UnsupportedModelError("GGUF vocabulary is missing or inconsistent")
        self.vocab_size = len(tokens)
        self.special_ids = frozenset(i for i, t in enumerate(types) if t == CONTROL)
        alphabet = set(_bytes_to_unicode().values())
        decoder = {c: b for b, c in _bytes_to_unicode().items()}
        # Token texts and bytes are kept packed (under 1 MB each, not 49,152 objects); the
        # vocab dict and merge pairs are scratch for building the BPE model.
        self.tokens = TokenTexts(t.encode("utf-8") for t in tokens)
        self._bytes = PackedBytes(
            b"" if i in self.special_ids
            else bytes(decoder[c] for c in t) if set(t) <= alphabet else t.encode("utf-8")
            for i, t in enumerate(tokens)
        )
        vocab = {t: i for i, t in enumerate(tokens)}
        merges = file.array("tokenizer.ggml.merges") or []
        if not all(type(m) is str for m in merges):
            raise UnsupportedModelError("GGUF merges are not strings")
        # Merge halves are vocabulary tokens: share the token list's strings, not 98k copies.
        same = tokens.__getitem__
        pairs = [(same(vocab[a]) if a in vocab else a, same(vocab[b]) if b in vocab else b)
                 for a, sep, b in (m.partition(" ") for m in merges) if sep]
        del merges
        try:  # tokenizers raises a bare Exception for a merge of tokens not in the vocabulary
            tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False))
        except Exception as exc:  # noqa: BLE001
            raise UnsupportedModelError(f"GGUF vocabulary is inconsistent: {exc}") from None
        del pairs
        pre = meta.get("tokenizer.ggml.pre", "gpt2")
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        if pre in _LLAMA3_LIKE:
            split = _LLAMA3_SPLIT
            first = []
        else:
            split = _GPT2_SPLIT
            first = [pre_tokenizers.Digits(individual_digits=True)] if pre in _DIGITS_FIRST else []
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [*first, pre_tokenizers.Split(Regex(split), behavior="isolated"), byte_level]
        )
        tok.decoder = decoders.ByteLevel()
        # Control tokens (``<|im_end|>``) match whole in text. One spelled outside the byte
        # alphabet is a llama.cpp mislabel that transformers skips too.
        tok.add_special_tokens([
            AddedToken(tokens[i], special=True, normalized=False)
            for i in sorted(self.special_ids) if set(tokens[i]) <= alphabet
        ])
        user = [AddedToken(tokens[i], special=False, normalized=False)
                for i, t in enumerate(types) if t == USER_DEFINED]
        if user:
            tok.add_tokens(user)
        self._tok = tok
        file.release_pages()  # the vocabulary's and merges' pages, read once
        self.add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False))
        self.bos_id = _opt_id(meta, "tokenizer.ggml.bos_token_id", self.vocab_size)
        self.eos_id = _opt_id(meta, "tokenizer.ggml.eos_token_id", self.vocab_size)
        stops = {self.eos_id, _opt_id(meta, "tokenizer.ggml.eot_token_id", self.vocab_size)}
        for name in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>"):
            if name in vocab and vocab[name] in self.special_ids:
                stops.add(vocab[name])
        self.stop_ids = frozenset(s for s in stops if s is not None)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def encode(self, text: str, *, add_bos: bool | None = None) -> list[int]:
        """Token ids of `text`; special tokens written in the text (``<|im_start|>``) stay whole."""
        ids = self._tok.encode(text, add_special_tokens=False).ids
        if (self.add_bos if add_bos is None else add_bos) and self.bos_id is not None:
            ids = [self.bos_id, *ids]
        return ids

    def token_bytes(self, token_id: int) -> bytes:
        """Raw bytes a token stands for; control tokens give no bytes."""
        return self._bytes[token_id]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`, control tokens skipped, invalid UTF-8 replaced."""
        return b"".join(self._bytes[i] for i in ids).decode("utf-8", errors="replace")

    def stream(self) -> TextStream:
        return TextStream(self)


class PackedBytes:
    """Many short byte strings in one buffer, indexed by position: a fraction of the memory
    of a list of bytes objects (a vocabulary of 49,152 tokens takes under 1 MB)."""

    def __init__(self, items: Iterable[bytes]) -> None:
        parts = list(items)
        self._offsets = array("Q", accumulate(map(len, parts), initial=0))
        self._blob = b"".join(parts)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, index: int) -> bytes:
        n = len(self._offsets) - 1
        i = index + n if index < 0 else index
        if not 0 <= i < n:
            raise IndexError(f"token {index} is outside a vocabulary of {n}")
        return self._blob[self._offsets[i]:self._offsets[i + 1]]


class TokenTexts:
    """The vocabulary's token strings, by id, kept packed as UTF-8."""

    def __init__(self, items: Iterable[bytes]) -> None:
        self._packed = PackedBytes(items)

    def __len__(self) -> int:
        return len(self._packed)

    def __getitem__(self, index: int) -> str:
        return self._packed[index].decode("utf-8")


class TextStream:
    """Turns tokens into text as they arrive, never splitting a multi-byte character."""

    def __init__(self, tokenizer: GGUFTokenizer) -> None:
        self._tokenizer = tokenizer
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._decoder.decode(self._tokenizer.token_bytes(token_id))

    def finish(self) -> str:
        return self._decoder.decode(b"", final=True)


def _opt_id(meta: dict, key: str, vocab_size: int) -> int | None:
    value = meta.get(key)
    if isinstance(value, int) and 0 <= value < vocab_size:
        return value
    return None

"""SentencePiece vocabularies (`tokenizer.ggml.model = llama`: Llama-2, Mistral, TinyLlama), built
as a `tokenizers` BPE with byte fallback.

Their pieces carry scores instead of merges: two adjacent symbols merge when their
concatenation is a piece, the highest-scoring first, which is BPE with the merges ranked by
the score of what they make (llama.cpp's SPM tokenizer and transformers' GGUF loader do the
same). Spaces are ``▁``; a dummy ``▁`` is put before the text (`add_space_prefix`, on unless
the file says otherwise); characters without a piece fall back to ``<0xNN>`` byte tokens.

Where llama.cpp and transformers disagree we follow transformers, the project's reference:
the dummy prefix goes before the start of the text only (llama.cpp also puts one after each
special token), and text that already starts with a space gets no second one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from hive_core.model.errors import TokenizerError
from hive_core.model.tokenizer.vocab import BYTE, CONTROL, NORMAL, UNKNOWN, USER_DEFINED, Vocabulary

if TYPE_CHECKING:
    from tokenizers import Tokenizer

SPACE = "\u2581"  # ▁, SentencePiece's visible space
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def spm_merges(vocab: Vocabulary) -> list[tuple[str, str]]:
    """Every pair of pieces whose concatenation is a normal piece, best first.

    Ranked by the score of the piece made (ties: longer left part, then longer right part,
    then the made piece's vocabulary order), so BPE applies them in SentencePiece's order. Control, byte and
    unused tokens are never made by merging, as in SentencePiece.
    """
    if vocab.scores is None:
        raise TokenizerError("the SentencePiece vocabulary has no scores (tokenizer.ggml.scores)")
    ids = {t: i for i, t in enumerate(vocab.tokens)}
    found: list[tuple[float, int, int, int, str, str]] = []
    for made, (piece, kind, score) in enumerate(zip(vocab.tokens, vocab.types, vocab.scores,
                                                     strict=True)):
        if kind != NORMAL or len(piece) < 2:
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in ids and right in ids:
                found.append((-float(score), -len(left), -len(right), made, left, right))
    found.sort(key=lambda m: m[:4])
    return [(m[4], m[5]) for m in found]


def build_spm(vocab: Vocabulary) -> tuple[Tokenizer, bool]:
    """The `tokenizers` model of a SentencePiece vocabulary, and whether it adds a dummy prefix."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    tokens = vocab.tokens
    ids = {t: i for i, t in enumerate(tokens)}
    if len(ids) != len(tokens):
        raise TokenizerError("the SentencePiece vocabulary lists a token twice")
    unk = vocab.special_id("unknown_token_id", 0)
    unk_token = tokens[unk] if unk is not None else None
    merges = spm_merges(vocab)
    try:
        tok = Tokenizer(models.BPE(vocab=ids, merges=merges, unk_token=unk_token,
                                   fuse_unk=True, byte_fallback=True))
    except Exception as exc:  # noqa: BLE001  (tokenizers raises a bare Exception)
        raise TokenizerError(f"the GGUF's SentencePiece vocabulary is inconsistent: {exc}") from None
    prefix = vocab.flag("add_space_prefix", True)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement=SPACE, prepend_scheme="first" if prefix else "never", split=False)
    special = vocab.ids_of(CONTROL) + vocab.ids_of(UNKNOWN)
    tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                            for i in sorted(special)])
    user = [AddedToken(tokens[i], special=False, normalized=False) for i in vocab.ids_of(USER_DEFINED)]
    if user:
        tok.add_tokens(user)
    return tok, prefix


def spm_token_bytes(vocab: Vocabulary) -> Iterator[bytes]:
    """Bytes each token stands for, in id order: ``▁`` a space, ``<0xNN>`` one byte, control
    and unknown tokens none."""
    for t, kind in zip(vocab.tokens, vocab.types, strict=True):
        if kind in (CONTROL, UNKNOWN):
            yield b""
        elif kind == BYTE and (m := _BYTE_TOKEN.fullmatch(t)):
            yield bytes([int(m.group(1), 16)])
        else:
            yield t.replace(SPACE, " ").encode("utf-8")

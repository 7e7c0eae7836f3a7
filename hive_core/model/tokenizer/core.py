"""`GGUFTokenizer`: the tokenizer a GGUF file's metadata describes, byte-level BPE or
SentencePiece, with its special tokens, BOS rule and stop tokens."""

from __future__ import annotations

import codecs
from collections.abc import Sequence

from hive_core.model.gguf_file import GGUFModelFile
from hive_core.model.tokenizer.bpe import bpe_token_bytes, build_bpe
from hive_core.model.tokenizer.packed import PackedBytes, TokenTexts
from hive_core.model.tokenizer.spm import build_spm, spm_token_bytes
from hive_core.model.tokenizer.vocab import CONTROL, read_vocabulary

# Turn-ending tokens that stop generation when the vocabulary marks them control, beside the
# file's EOS/EOT ids (llama.cpp's end-of-generation list, for the families we run).
STOP_NAMES = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|endoftext|>",
              "<end_of_turn>", "<|end|>", "</s>")


class GGUFTokenizer:
    """Encode text to ids and ids back to bytes/text, as the model's own tokenizer does."""

    def __init__(self, file: GGUFModelFile) -> None:
        vocab = read_vocabulary(file)
        self.kind = vocab.kind
        self.vocab_size = len(vocab.tokens)
        if vocab.kind == "gpt2":
            self._tok, pre = build_bpe(vocab)
            self.add_bos = vocab.flag("add_bos_token", pre.add_bos)
            # Decoded text keeps every byte: a leading space is the text's own.
            self._dummy_prefix = False
            token_bytes = bpe_token_bytes(vocab)
            bos_default = eos_default = None
        else:
            self._tok, self._dummy_prefix = build_spm(vocab)
            self.add_bos = vocab.flag("add_bos_token", True)  # llama.cpp's SentencePiece default
            token_bytes = spm_token_bytes(vocab)
            bos_default, eos_default = 1, 2
        # Token texts and bytes are kept packed (under 1 MB each, not 49,152 objects).
        self.tokens = TokenTexts(vocab.tokens)
        self._bytes = PackedBytes(token_bytes)
        self.special_ids = frozenset(vocab.ids_of(CONTROL))
        self.bos_id = vocab.special_id("bos_token_id", bos_default)
        self.eos_id = vocab.special_id("eos_token_id", eos_default)
        stops = {self.eos_id, vocab.special_id("eot_token_id"), vocab.special_id("eom_token_id")}
        ids = {t: i for i, t in enumerate(vocab.tokens) if t in STOP_NAMES}
        stops.update(i for i in ids.values() if i in self.special_ids)
        self.stop_ids = frozenset(s for s in stops if s is not None)
        del vocab
        file.release_pages()  # the vocabulary's and merges' pages, read once

    @property
    def bos_text(self) -> str:
        """The BOS token as text ("" when the vocabulary has none)."""
        return "" if self.bos_id is None else self.tokens[self.bos_id]

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def encode(self, text: str, *, add_bos: bool | None = None) -> list[int]:
        """Token ids of `text`; special tokens written in the text (``<|im_start|>``) stay whole.

        BOS is put first when `add_bos` (default: the vocabulary's own rule) says so.
        """
        ids = self._tok.encode(text, add_special_tokens=False).ids
        if (self.add_bos if add_bos is None else add_bos) and self.bos_id is not None:
            ids = [self.bos_id, *ids]
        return ids

    def token_bytes(self, token_id: int) -> bytes:
        """Raw bytes a token stands for; control tokens give no bytes."""
        return self._bytes[token_id]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`, control tokens skipped, invalid UTF-8 replaced; a SentencePiece
        vocabulary's dummy prefix space is dropped (decode(encode(text)) == text)."""
        text = b"".join(self._bytes[i] for i in ids).decode("utf-8", errors="replace")
        return text[1:] if self._dummy_prefix and text.startswith(" ") else text

    def stream(self) -> TextStream:
        return TextStream(self)


class TextStream:
    """Turns tokens into text as they arrive, never splitting a multi-byte character; the
    first text loses a SentencePiece dummy-prefix space, as `decode` does."""

    def __init__(self, tokenizer: GGUFTokenizer) -> None:
        self._tokenizer = tokenizer
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._strip = tokenizer._dummy_prefix

    def push(self, token_id: int) -> str:
        text = self._decoder.decode(self._tokenizer.token_bytes(token_id))
        if self._strip and text:
            self._strip = False
            return text.removeprefix(" ")
        return text

    def finish(self) -> str:
        return self._decoder.decode(b"", final=True)

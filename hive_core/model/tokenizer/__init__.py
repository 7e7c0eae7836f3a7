"""The tokenizer described by a GGUF file's metadata: byte-level BPE (`gpt2`) or SentencePiece
(`llama`), built with `tokenizers`."""

from hive_core.model.tokenizer.bpe import PRE_TOKENIZERS, bytes_to_unicode
from hive_core.model.tokenizer.core import STOP_NAMES, GGUFTokenizer, TextStream
from hive_core.model.tokenizer.packed import PackedBytes, TokenTexts

_bytes_to_unicode = bytes_to_unicode  # the name `hive_core.model.tiny` imports

__all__ = [
    "PRE_TOKENIZERS", "STOP_NAMES", "GGUFTokenizer", "PackedBytes", "TextStream", "TokenTexts",
    "bytes_to_unicode",
]

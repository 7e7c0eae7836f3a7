"""Errors raised by the model package: each a ValueError subclass with one clear message."""

from __future__ import annotations

from hive_core.base.stage import StageError

__all__ = [
    "GGUFFormatError", "ModelError", "ModelNotFoundError", "PromptError", "StageError",
    "TokenizerError", "UnsupportedModelError",
]


class ModelError(ValueError):
    """A model file, prompt, stage or tensor that cannot be used as given."""


class ModelNotFoundError(ModelError):
    """No model file at the path given, in $CADENCIA_MODEL, or in the bundled package."""


class GGUFFormatError(ModelError):
    """The file is not a readable GGUF: bad magic, truncated, or tensors that do not fit."""


class UnsupportedModelError(ModelError):
    """A well-formed GGUF of an architecture, tokenizer or tensor type we do not run."""


class TokenizerError(UnsupportedModelError):
    """A GGUF vocabulary no tokenizer can be built from: an unknown kind or pre-tokenizer,
    missing merges or scores, arrays that disagree with the token list."""


class PromptError(ModelError):
    """A prompt that cannot be generated from: empty, or longer than the context."""


"""A GGUF model file opened for reading: validated metadata, config, and tensors on demand.

Tensors stay memory-mapped until asked for; `tensor()` dequantises one at a time, so a
shard pays only for the layers it serves. `loaded` records every name dequantised.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hive_core.model.config import LlamaConfig
from hive_core.model.errors import GGUFFormatError, ModelNotFoundError, UnsupportedModelError

GGUF_MAGIC = b"GGUF"
# Big string arrays are decoded only when asked for (the tokenizer), not for the config.
_LAZY_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type",
                "tokenizer.ggml.scores")


class GGUFModelFile:
    """One llama-architecture GGUF file: metadata, `config`, and `tensor(name)`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import gguf

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelNotFoundError(f"model file not found: {self.path}")
        size = self.path.stat().st_size
        with self.path.open("rb") as fh:
            head = fh.read(4)
        if head != GGUF_MAGIC:
            raise GGUFFormatError(f"{self.path} is not a GGUF file (bad magic {head!r})")
        try:
            self._reader = gguf.GGUFReader(self.path)
        except Exception as exc:  # the reader raises assorted errors on damaged files
            raise GGUFFormatError(
                f"{self.path} is truncated or malformed: {type(exc).__name__}: {exc}"
            ) from exc
        self._quant_sizes = gguf.GGML_QUANT_SIZES
        self._dequantize = gguf.dequantize
        self._tensors = {t.name: t for t in self._reader.tensors}
        for t in self._reader.tensors:
            block, type_size = self._quant_sizes[t.tensor_type]
            expected = int(t.n_elements) // block * type_size
            if int(t.data.nbytes) != expected or t.data_offset + expected > size:
                raise GGUFFormatError(f"{self.path} is truncated: tensor {t.name} ends past the file")
        self.metadata: dict[str, Any] = {}
        for key, field in self._reader.fields.items():
            if key in _LAZY_ARRAYS:
                continue
            try:
                self.metadata[key] = field.contents()
            except (ValueError, UnicodeDecodeError, IndexError) as exc:
                raise GGUFFormatError(f"{self.path}: unreadable metadata {key}: {exc}") from exc
        vocab = self.array_len("tokenizer.ggml.tokens")
        embd = self._tensors.get("token_embd.weight")
        if vocab is None and embd is not None:
            vocab = int(embd.shape[-1])
        self.config = LlamaConfig.from_metadata(self.metadata, vocab_size=vocab)
        self.loaded: list[str] = []

    def array_len(self, key: str) -> int | None:
        field = self._reader.fields.get(key)
        return None if field is None else len(field.data)

    def array(self, key: str) -> list[Any] | None:
        """A metadata array (e.g. the token list), decoded on demand."""
        field = self._reader.fields.get(key)
        if field is None:
            return None
        try:
            return list(field.contents())
        except (ValueError, UnicodeDecodeError, IndexError) as exc:
            raise GGUFFormatError(f"{self.path}: unreadable metadata {key}: {exc}") from exc

    def has_tensor(self, name: str) -> bool:
        return name in self._tensors

    @property
    def tensor_names(self) -> list[str]:
        return list(self._tensors)

    def raw(self, name: str) -> tuple[np.ndarray, str]:
        """One tensor's stored blocks (read-only memory map, rows as in the file) and its GGML
        type name, for `hive_core.model.packed` to keep quantised weights packed."""
        t = self._tensors.get(name)
        if t is None:
            raise GGUFFormatError(f"{self.path} has no tensor {name}")
        self.loaded.append(name)
        return t.data, t.tensor_type.name

    def tensor(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """Dequantise one tensor to `dtype`, checking it has the `shape` the config implies.

        Query and key rows are un-permuted: llama.cpp's converter interleaves each head's
        rotary halves; we undo it exactly as transformers' GGUF loader does, so weights are
        in the Hugging Face layout and RoPE is the rotate-half form.
        """
        t = self._tensors.get(name)
        if t is None:
            raise GGUFFormatError(f"{self.path} has no tensor {name}")
        try:
            array = self._dequantize(t.data, t.tensor_type)
        except NotImplementedError as exc:
            raise UnsupportedModelError(
                f"tensor {name} has type {t.tensor_type.name}, which cannot be dequantised"
            ) from exc
        if tuple(array.shape) != shape:
            raise GGUFFormatError(f"tensor {name} has shape {tuple(array.shape)}, expected {shape}")
        cfg = self.config
        if ".attn_q." in name:
            array = _unpermute(array, cfg.n_heads)
        elif ".attn_k." in name:
            array = _unpermute(array, cfg.n_kv_heads)
        # Copy out of the read-only memory map before torch owns it.
        out = torch.from_numpy(np.array(array, dtype=np.float32, copy=True))
        self.loaded.append(name)
        return out if dtype == torch.float32 else out.to(dtype)


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of llama.cpp's `permute` of q/k rows (see transformers' LlamaTensorProcessor)."""
    dim = w.shape[0] // n_head // 2
    return w.reshape(n_head, dim, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)

"""A GGUF model file opened for reading: validated metadata, config, and tensors on demand.

The header is read by `gguf_parse` (bounds-checked, the tokenizer's arrays left in the file);
tensors stay memory-mapped until asked for; `tensor()` dequantises one at a time with
`gguf.dequantize`, so a shard pays only for the layers it serves. `loaded` records every
name dequantised or handed out raw.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hive_core.model.config import LlamaConfig
from hive_core.model.errors import GGUFFormatError, ModelNotFoundError, UnsupportedModelError
from hive_core.model.gguf_parse import MAGIC, TensorInfo, decode_array, parse_header
from hive_core.model.packed import release_pages

_BIASES = (".attn_q.bias", ".attn_k.bias", ".attn_v.bias")


class GGUFModelFile:
    """One llama-family GGUF file: metadata, `config`, and `tensor(name)`.

    Scalar metadata is decoded on open; the tokenizer's big arrays stay in the file until
    `array()` decodes one (and keeps no copy); tensors are read-only views of one memory map.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import gguf

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelNotFoundError(f"model file not found: {self.path}")
        with self.path.open("rb") as fh:
            head = fh.read(len(MAGIC))
        if head != MAGIC:  # checked before mapping: an empty file cannot be mapped
            raise GGUFFormatError(f"{self.path} is not a GGUF file (bad magic {head!r})")
        self._map = np.memmap(self.path, mode="r")
        self._buf = self._map.data
        header = parse_header(self._buf, str(self.path))
        self._dequantize = gguf.dequantize
        self._arrays = header.arrays
        self._tensors = header.tensors
        self.metadata: dict[str, Any] = header.metadata
        vocab = self.array_len("tokenizer.ggml.tokens")
        embd = self._tensors.get("token_embd.weight")
        if vocab is None and embd is not None:
            vocab = int(embd.dims[-1])
        self.config = LlamaConfig.from_metadata(self.metadata, vocab_size=vocab,
                                                rope_freqs=self._rope_freqs())
        for name in self._tensors:
            if name.endswith(".bias") and not name.endswith(_BIASES):
                raise UnsupportedModelError(
                    f"{self.path}: tensor {name} is a bias we do not apply (only q/k/v biases are)")
        self.loaded: list[str] = []

    def _rope_freqs(self) -> list[float] | None:
        """Llama-3.1's RoPE divisors, which llama.cpp stores as a tensor, not as metadata."""
        t = self._tensors.get("rope_freqs.weight")
        if t is None:
            return None
        if len(t.dims) != 1 or t.ggml_type.name not in ("F32", "F16"):
            raise GGUFFormatError(f"{self.path}: rope_freqs is {t.ggml_type.name} {t.dims}, "
                                  "not one vector of floats")
        return [float(x) for x in self._view(t)]

    def qk_heads(self, name: str) -> int:
        """Heads whose rotary halves llama.cpp interleaved in the rows of tensor `name` (query
        or key weights and biases of a "llama" file), to be un-permuted; 0 for any other."""
        cfg = self.config
        if not cfg.qk_permuted:
            return 0
        return cfg.n_heads if ".attn_q." in name else cfg.n_kv_heads if ".attn_k." in name else 0

    def array_len(self, key: str) -> int | None:
        """Length of a metadata array without decoding it; None when the key is absent."""
        span = self._arrays.get(key)
        if span is not None:
            return span.count
        value = self._small_array(key)
        return None if value is None else len(value)

    def array(self, key: str) -> list[Any] | None:
        """A metadata array (e.g. the token list) as a new list, decoded on demand; None when
        the key is absent. Big arrays are decoded from the file on every call, not cached."""
        span = self._arrays.get(key)
        if span is None:
            value = self._small_array(key)
            return None if value is None else list(value)
        return decode_array(self._buf, span, key, str(self.path))

    def _small_array(self, key: str) -> list[Any] | None:
        """An array short enough to be decoded with the metadata; None when absent."""
        value = self.metadata.get(key)
        if value is not None and not isinstance(value, list):
            raise GGUFFormatError(f"{self.path}: metadata {key} is not an array")
        return value

    def has_tensor(self, name: str) -> bool:
        return name in self._tensors

    @property
    def tensor_names(self) -> list[str]:
        return list(self._tensors)

    def release_pages(self) -> None:
        """Drop this process's resident pages of the file (its header once parsed, tensors
        once packed): they stay in the page cache and are read again on demand."""
        release_pages(self._map)

    def raw(self, name: str) -> tuple[np.ndarray, str]:
        """One tensor's stored blocks (read-only memory map, rows as in the file) and its GGML
        type name, for `hive_core.model.packed` to keep quantised weights packed."""
        t = self._info(name)
        self.loaded.append(name)
        return self._view(t), t.ggml_type.name

    def file_offset(self, array: np.ndarray) -> int:
        """The byte offset in the file of an array `raw` returned (a view of the map)."""
        offset = array.ctypes.data - self._map.ctypes.data
        if not 0 <= offset <= self._map.size - array.nbytes:
            raise ValueError("the array is not a view of this file's memory map")
        return offset

    def tensor(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """Dequantise one tensor to `dtype`, checking it has the `shape` the config implies.

        Query and key rows of a "llama" file are un-permuted: llama.cpp's converter interleaves
        each head's rotary halves; we undo it exactly as transformers' GGUF loader does, so
        weights are in the Hugging Face layout and RoPE is the rotate-half form.
        """
        t = self._info(name)
        try:
            array = self._dequantize(self._view(t), t.ggml_type)
        except NotImplementedError as exc:
            raise UnsupportedModelError(
                f"tensor {name} has type {t.ggml_type.name}, which cannot be dequantised"
            ) from exc
        if tuple(array.shape) != shape:
            raise GGUFFormatError(f"tensor {name} has shape {tuple(array.shape)}, expected {shape}")
        heads = self.qk_heads(name)
        if heads:
            array = _unpermute(array, heads)
        # Copy out of the read-only memory map before torch owns it.
        out = torch.from_numpy(np.array(array, dtype=np.float32, copy=True))
        self.loaded.append(name)
        return out if dtype == torch.float32 else out.to(dtype)

    def _info(self, name: str) -> TensorInfo:
        t = self._tensors.get(name)
        if t is None:
            raise GGUFFormatError(f"{self.path} has no tensor {name}")
        return t

    def _view(self, t: TensorInfo) -> np.ndarray:
        dtype, shape = t.layout()
        return self._map[t.offset:t.offset + t.n_bytes].view(dtype).reshape(shape)


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of llama.cpp's `permute` of q/k rows (see transformers' LlamaTensorProcessor)."""
    dim = w.shape[0] // n_head // 2
    return w.reshape(n_head, dim, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)

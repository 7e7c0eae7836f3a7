"""Fixtures of the model tests: random GGUF blocks for the packed-matrix kernels."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch


def _quantised(rows: int, cols: int, qtype: str, seed: int = 0) -> tuple[np.ndarray, torch.Tensor]:
    """Random GGUF blocks and the float32 matrix `gguf` dequantises them to."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols)) * 0.05 + rng.standard_normal((rows, 1)) * 0.02
    qt = gguf.GGMLQuantizationType[qtype]
    blocks = gguf.quantize(w.astype(np.float32), qt)
    return blocks, torch.from_numpy(gguf.dequantize(blocks, qt).astype(np.float32))


@pytest.fixture
def quantised() -> Any:
    """``quantised(rows, cols, qtype, seed=0)``: random blocks and their float32 matrix."""
    return _quantised


def _random_blocks(rows: int, cols: int, qtype: str, seed: int = 0) -> tuple[np.ndarray, torch.Tensor]:
    """Valid random GGUF blocks of a kernel format (any of `FORMATS`, K-quants included, which
    `gguf` cannot quantise): random code bytes, finite float16 scales of either sign; and the
    float32 matrix `gguf` dequantises them to."""
    from hive_core.model.packed import FORMATS

    fmt = FORMATS[qtype]
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (rows, cols // fmt.values, fmt.nbytes), dtype=np.uint8)
    scales = (rng.standard_normal((rows, cols // fmt.values, fmt.halves)) * 0.01).astype(np.float16)
    blocks[..., fmt.halves_at : fmt.halves_at + 2 * fmt.halves] = scales.view(np.uint8)
    blocks = blocks.reshape(rows, -1)
    dense = gguf.dequantize(blocks, gguf.GGMLQuantizationType[qtype]).astype(np.float32)
    return blocks, torch.from_numpy(dense)


@pytest.fixture
def random_blocks() -> Any:
    """``random_blocks(rows, cols, qtype, seed=0)``: valid random blocks of any kernel format
    and their float32 matrix."""
    return _random_blocks


def _retype_gguf(src: Path, dst: Path, types: Callable[[str], str | None], seed: int = 0) -> Path:
    """A copy of the float32 GGUF `src` at `dst` with each matrix stored as ``types(name)``
    (None: float32): `gguf`'s quantisers where it has one, else (K-quants) valid random blocks
    of that type. Metadata is copied field by field."""
    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(dst, arch)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
    for i, t in enumerate(reader.tensors):
        data = np.array(t.data, dtype=np.float32)
        qtype = types(t.name) if data.ndim == 2 else None
        if qtype is None:
            writer.add_tensor(t.name, data)
            continue
        qt = gguf.GGMLQuantizationType[qtype]
        try:
            blocks = gguf.quantize(data, qt)
        except NotImplementedError:
            blocks, _ = _random_blocks(data.shape[0], data.shape[1], qtype, seed + i)
        writer.add_tensor(t.name, blocks, raw_shape=blocks.shape, raw_dtype=qt)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


@pytest.fixture
def retype_gguf() -> Any:
    """``retype_gguf(src, dst, types, seed=0)``: a float32 GGUF copied with its matrices
    stored in other GGML types (see `_retype_gguf`)."""
    return _retype_gguf

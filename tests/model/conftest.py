"""Fixtures of the model tests: random GGUF blocks for the packed-matrix kernels."""

from __future__ import annotations

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

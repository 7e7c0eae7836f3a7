"""Every GGUF block format of our kernel on every path this CPU can run (AVX-512, AVX2,
portable): the kernel reads `gguf`'s values exactly from the blocks where they lie, products
are float32-exact against `gguf.dequantize` and a float64 matmul, and a product depends
neither on the thread count nor on the other rows of its batch, on odd shapes (rows not whole
groups of four, widths not a multiple of 256 for the 32-weight formats, long rows)."""

from __future__ import annotations

import platform
from typing import Any

import gguf
import numpy as np
import pytest
import torch

from hive_core import native
from hive_core.model.packed import FORMATS, NATIVE_QTYPE, block_matrix
from hive_core.model.packed_run import set_threads

# Paths: the library built for this CPU, and the narrower builds (`native.VARIANTS`).
PATHS = {"native": None, "avx2": 256, "portable": 0}
# Matrix shapes per block size: one row; rows that leave the last group of four partial; long
# rows, and widths not a multiple of 256.
SHAPES = {32: [(1, 32), (6, 96), (69, 576), (9, 1056)], 256: [(1, 256), (6, 512), (69, 1536), (5, 8448)]}
CASES = [(q, rows, cols) for q, f in FORMATS.items() for rows, cols in SHAPES[f.values]]


def _cpu_has(flag: str) -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(flag in line.split() for line in f if line.startswith("flags"))
    except OSError:
        return False


@pytest.fixture(scope="module", params=list(PATHS))
def path(request: pytest.FixtureRequest) -> Any:
    """The kernel ops of one path (skipped where this CPU cannot run it)."""
    name = request.param
    if name == "native":
        ops = native.ops()
        if ops is None:
            pytest.fail(f"the CPU kernels must build here: {native.unavailable_reason()}")
        return ops
    if name not in native.VARIANTS:
        pytest.skip(f"no {name} build on {platform.machine()}")
    if name == "avx2" and not all(_cpu_has(f) for f in ("avx2", "fma", "f16c")):
        pytest.skip("this CPU has no AVX2 with FMA and F16C")
    ops = native.variant_ops(name)
    assert int(ops.simd()) == PATHS[name], f"the {name} build took path {int(ops.simd())}"
    return ops


def relative_error(y: torch.Tensor, ref: torch.Tensor, x: torch.Tensor, dense: torch.Tensor) -> float:
    """The largest ``|y - ref|`` of ``x @ dense.T``'s outputs, each relative to the sum of the
    magnitudes the output adds up (what float32 rounding scales with)."""
    scale = (x.double().abs() @ dense.double().abs().T).clamp_min(1e-30)
    return ((y.double() - ref.double()).abs() / scale).max().item()


def close_to_exact(y: torch.Tensor, x: torch.Tensor, dense: torch.Tensor) -> None:
    """`y` is ``x @ dense.T`` to float32 precision: within a few float32 roundings of each
    output's float64 value."""
    err = relative_error(y, x.double() @ dense.double().T, x, dense)
    assert err < 1e-6, f"relative error {err:.2e}"


def test_the_format_table_is_ggmls_and_the_kernels() -> None:
    ops = native.ops()
    assert ops is not None
    for name, f in FORMATS.items():
        qt = gguf.GGMLQuantizationType[name]
        assert (f.ggml, (f.values, f.nbytes)) == (qt.value, gguf.GGML_QUANT_SIZES[qt]), name
        assert list(ops.block_format(f.ggml)) == [f.values, f.nbytes, f.halves, f.halves_at], name
        assert NATIVE_QTYPE[name] == f.ggml


@pytest.mark.parametrize("qtype,rows,cols", CASES)
def test_the_kernel_reads_the_gguf_values_exactly(random_blocks: Any, path: Any, qtype: str,
                                                  rows: int, cols: int) -> None:
    """The scalar reference of each format expands the blocks, in the GGUF's own bytes and
    rows in any order, to `gguf.dequantize`'s bits."""
    blocks, dense = random_blocks(rows, cols, qtype)
    order = np.random.default_rng(1).permutation(rows)
    lin = block_matrix(blocks, qtype, (rows, cols), path.block_linear, order)
    assert lin.in_features == cols and lin.out_features == rows
    got = path.block_dequantize(lin.data, lin.offsets, cols, FORMATS[qtype].ggml)
    assert torch.equal(got, dense[order])
    assert lin.data.numel() == blocks.nbytes == lin.nbytes()


@pytest.mark.parametrize("qtype,rows,cols", CASES)
def test_every_path_multiplies_each_format_in_float32(
    random_blocks: Any, path: Any, qtype: str, rows: int, cols: int,
) -> None:
    blocks, dense = random_blocks(rows, cols, qtype, seed=rows)
    lin = block_matrix(blocks, qtype, (rows, cols), path.block_linear)
    x = torch.randn(5, cols)
    fast = lin(x)
    assert fast.shape == (5, rows) and fast.dtype == torch.float32
    close_to_exact(fast, x, dense)
    reference = path.block_linear_generic(x, lin.data, lin.offsets, cols, FORMATS[qtype].ggml)
    close_to_exact(reference, x, dense)
    assert relative_error(fast, reference, x, dense) < 1e-6


@pytest.mark.parametrize("qtype", list(FORMATS))
def test_a_product_depends_neither_on_threads_nor_on_the_batch(
    random_blocks: Any, path: Any, qtype: str,
) -> None:
    """Replicas on other thread counts, and a verified batch against the same rows decoded
    one at a time (batches of 1 to 9 rows: passes of four, or two on AVX2, and a remainder),
    must agree to the bit."""
    cols = 2 * FORMATS[qtype].values if FORMATS[qtype].values == 256 else 576
    blocks, _ = random_blocks(203, cols, qtype)
    lin = block_matrix(blocks, qtype, (203, cols), path.block_linear)
    x = torch.randn(9, cols)
    alone = torch.cat([lin(x[i : i + 1]) for i in range(9)])
    for m in (2, 3, 4, 5, 9):
        assert torch.equal(lin(x[:m]), alone[:m]), f"a batch of {m}"
    before = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            set_threads(n)
            assert torch.equal(lin(x), alone), f"{n} threads"
    finally:
        torch.set_num_threads(before)

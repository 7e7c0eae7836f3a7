"""Our CPU block kernel (`hive_core.native`, `BlockLinear`) on GGUF blocks `gguf` quantises:
exact float32 products for large batches, clear refusals, the build and its narrower
variants, and the fallback to torch's int4 kernel when it is turned off. Every format on
every path: `test_block_formats.py`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from hive_core import native
from hive_core.base.stage import Stage
from hive_core.model.errors import UnsupportedModelError
from hive_core.model.executor import ShardExecutor
from hive_core.model.gguf_file import GGUFModelFile
from hive_core.model.kv.factory import kv_factory
from hive_core.model.packed import (
    NATIVE_QTYPE,
    BlockLinear,
    PackedLinear,
    block_matrix,
    native_kernel,
    unfused,
)
from hive_core.model.packed_run import set_threads
from hive_core.model.pipeline import LocalPipeline


@pytest.fixture(scope="module")
def ops() -> object:
    got = native.ops()
    if got is None:
        pytest.fail(f"the CPU kernels must build here (./setup.sh builds them): "
                    f"{native.unavailable_reason()}")
    return got


def close_to_exact(y: torch.Tensor, x: torch.Tensor, dense: torch.Tensor) -> None:
    """`y` is ``x @ dense.T`` to float32 precision: within a few float32 roundings of each
    output's float64 value, scaled by the sum of the magnitudes it adds up."""
    ref = x.double() @ dense.double().T
    scale = x.double().abs() @ dense.double().abs().T
    err = ((y.double() - ref).abs() / scale).max().item()
    assert err < 1e-6, f"relative error {err:.2e}"


@pytest.mark.parametrize("qtype", ["Q4_1", "Q8_0"])
@pytest.mark.parametrize("rows,cols", [(64, 64), (190, 576), (577, 1536)])
@pytest.mark.parametrize("batch", [1, 3, 130])
def test_block_matrix_multiplies_in_float32(
    quantised: Any, ops, qtype: str, rows: int, cols: int, batch: int,
) -> None:
    blocks, dense = quantised(rows, cols, qtype)
    lin = block_matrix(blocks, qtype, (rows, cols), native_kernel())
    assert lin.out_features == rows and lin.in_features == cols
    x = torch.randn(batch, cols)
    y = lin(x)
    assert y.shape == (batch, rows) and y.dtype == torch.float32
    close_to_exact(y, x, dense)
    # The portable path (machines without AVX-512) computes the same products.
    close_to_exact(ops.block_linear_generic(x, lin.data, lin.offsets, cols, NATIVE_QTYPE[qtype]),
                   x, dense)


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q5_0", "Q8_0"])
def test_a_product_depends_neither_on_threads_nor_on_the_rest_of_the_batch(
    quantised: Any, qtype: str,
) -> None:
    """Replicas on other thread counts, and a verified batch against the same rows decoded
    one at a time, must agree to the bit, on a real layer's shape."""
    blocks, _ = quantised(1536, 576, qtype)
    lin = block_matrix(blocks, qtype, (1536, 576), native_kernel())
    x = torch.randn(7, 576)
    alone = torch.cat([lin(x[i : i + 1]) for i in range(7)])
    before = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 2, 3):
            set_threads(n)
            outs.append(lin(x))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(alone, o) for o in outs)
    assert torch.equal(lin(x[2:5]), alone[2:5])


def test_other_dtypes_are_computed_in_float32_and_cast_back(quantised: Any) -> None:
    blocks, dense = quantised(64, 128, "Q4_1")
    lin = block_matrix(blocks, "Q4_1", (64, 128), native_kernel())
    x = torch.randn(2, 3, 128).to(torch.bfloat16)
    y = lin(x)
    assert y.shape == (2, 3, 64) and y.dtype == torch.bfloat16
    assert torch.allclose(y.float(), x.float() @ dense.T, rtol=1e-2, atol=1e-2)


def test_bad_arguments_get_clear_errors(quantised: Any, ops) -> None:
    blocks, _ = quantised(64, 128, "Q4_1")
    lin = block_matrix(blocks, "Q4_1", (64, 128), native_kernel())
    q4_1 = NATIVE_QTYPE["Q4_1"]
    data, offsets = lin.data, lin.offsets
    with pytest.raises(RuntimeError, match="x must be CPU float32"):
        ops.block_linear(torch.randn(1, 96), data, offsets, 128, q4_1)
    with pytest.raises(RuntimeError, match="x must be CPU float32"):
        ops.block_linear(torch.randn(1, 128).double(), data, offsets, 128, q4_1)
    for unknown in (0, 1, 9, 15, 99):  # F32, F16, Q8_1, Q8_K: no kernel format
        with pytest.raises(RuntimeError, match="unknown qtype"):
            ops.block_linear(torch.randn(1, 128), data, offsets, 128, unknown)
        with pytest.raises(RuntimeError, match="unknown qtype"):
            ops.block_format(unknown)
    with pytest.raises(RuntimeError, match="not whole blocks of 256"):  # Q4_K blocks: 256 weights
        ops.block_linear(torch.randn(1, 128), data, offsets, 128, NATIVE_QTYPE["Q4_K"])
    # A row that would read past the data, or before it, is refused before anything is read.
    row = blocks.shape[1]
    for bad in (data.numel() - row + 1, -1):
        wrong = offsets.clone()
        wrong[5] = bad
        with pytest.raises(RuntimeError, match=f"row 5 at byte {bad} does not fit in the "
                                               f"{data.numel()} bytes"):
            ops.block_linear(torch.randn(1, 128), data, wrong, 128, q4_1)
    with pytest.raises(RuntimeError, match="contiguous CPU uint8"):
        ops.block_linear(torch.randn(1, 128), data.float(), offsets, 128, q4_1)
    with pytest.raises(RuntimeError, match="contiguous CPU int64"):
        ops.block_linear(torch.randn(1, 128), data, offsets.int(), 128, q4_1)


def test_the_variants_load_beside_the_main_library_and_report_their_path(ops) -> None:
    """The narrower builds (the paths of CPUs without AVX-512, or without AVX2) load into the
    same process under their own op namespaces, and say which path they took."""
    portable = native.variant_ops("portable")
    assert int(portable.simd()) == 0 and native.PATHS[0] == "portable"
    assert native.variant_ops("portable") is portable  # built and loaded once
    assert int(ops.simd()) in native.PATHS
    with pytest.raises(ValueError, match="no kernel variant 'sse'"):
        native.variant_ops("sse")


def test_a_failed_build_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXX", "false")  # a "compiler" that always fails
    with pytest.raises(native.NativeBuildError, match="false failed"):
        native.build(tmp_path / "k.so")
    assert not (tmp_path / "k.so").exists()
    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where the library's directory should go
    monkeypatch.delenv("CXX")
    with pytest.raises(native.NativeBuildError, match="cannot build into"):
        native.build(blocked / "k.so")
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(native.NativeBuildError, match="no C\\+\\+ compiler"):
        native.build(tmp_path / "k.so")


def test_turned_off_packed_weights_run_on_torch_int4_and_agree(
    tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = GGUFModelFile(tiny_gguf)
    fast = ShardExecutor.load(file, [Stage(0, 2)], weights="packed")
    monkeypatch.setenv(native.DISABLE_ENV, "0")
    assert native.ops() is None and "CADENCIA_NATIVE=0" in (native.unavailable_reason() or "")
    slow = ShardExecutor.load(GGUFModelFile(tiny_gguf), [Stage(0, 2)], weights="packed")
    assert isinstance(unfused(fast.weights.attention[0].q), BlockLinear)
    assert isinstance(unfused(slow.weights.attention[0].q), PackedLinear)
    # The tiny model's tied head (267 rows, Q8_0) fits neither torch's int4 kernel (rows in
    # sixteens) nor, turned off, ours: it would be dequantised, which the caller must allow.
    with pytest.raises(UnsupportedModelError, match=r"token_embd.weight is Q8_0 \[267 x 64\] "
                       r"and our CPU kernel.*unavailable here \(CADENCIA_NATIVE=0\).*"
                       r"allow_dequant=True"):
        LocalPipeline.load_single(GGUFModelFile(tiny_gguf), weights="packed")
    pipes = [LocalPipeline.load_single(GGUFModelFile(tiny_gguf), weights="packed",
                                       allow_dequant=True)]
    heads = [pipes[0].client.weights.head]
    assert heads[0] is not None and isinstance(heads[0].output, torch.Tensor)
    monkeypatch.delenv(native.DISABLE_ENV)
    pipes.append(LocalPipeline.load_single(GGUFModelFile(tiny_gguf), weights="packed"))
    heads.append(pipes[1].client.weights.head)
    assert heads[1] is not None and isinstance(heads[1].output, BlockLinear)
    prompt = [1, 5, 9, 2, 7]
    a, b = (p.new_session(kv_factory("fp32")).forward(prompt, all_logits=True) for p in pipes)
    # Float32 precision in both: the bodies' products and the two heads differ only in the
    # order of their additions.
    assert torch.equal(a.argmax(-1), b.argmax(-1)) and torch.allclose(a, b, rtol=1e-3, atol=1e-3)

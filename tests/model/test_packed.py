"""Packed weights: Q4_1/Q8_0 blocks on the int4 kernel match their dequantised matrices,
embeddings read rows exactly, shards hold only their own layers, splits change no bit."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hive_core.base.stage import Stage, even_stages, split_parts
from hive_core.model.errors import GGUFFormatError, ModelError, UnsupportedModelError
from hive_core.model.executor import ShardExecutor
from hive_core.model.gguf_file import GGUFModelFile
from hive_core.model.kv.factory import kv_factory
from hive_core.model.packed import (
    PACKED,
    DenseLinear,
    RowFile,
    block_matrix,
    fuse_rows,
    pack_blocks,
    packed_matrix,
    requantise_head,
    row_table,
    unfused,
)
from hive_core.model.packed_run import chunked, set_threads
from hive_core.model.pipeline import LocalPipeline

Q = gguf.GGMLQuantizationType


def run_steps(pipeline: LocalPipeline, prompt: list[int], follow: list[int]) -> list[torch.Tensor]:
    """Logits of every prompt position, then of each decode step feeding `follow`."""
    session = pipeline.new_session(kv_factory("fp32"))
    return [session.forward(prompt, all_logits=True)] + [session.forward([t]) for t in follow]


def assert_bit_identical(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for step, (x, y) in enumerate(zip(a, b, strict=True)):
        assert torch.equal(x, y), f"step {step}: logits differ by up to {(x - y).abs().max()}"


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q8_0"])
@pytest.mark.parametrize("rows,cols", [(64, 64), (192, 576), (576, 1536)])
@pytest.mark.parametrize("batch", [1, 5, 17])
def test_packed_matmul_matches_dequantised_matrix(
    quantised: Any, qtype: str, rows: int, cols: int, batch: int,
) -> None:
    blocks, dense = quantised(rows, cols, qtype)
    plain = pack_blocks(blocks, qtype, (rows, cols), exact=False)
    exact = pack_blocks(blocks, qtype, (rows, cols))
    assert plain.fine is None and exact.fine is not None and exact.spare > 0
    x = torch.randn(batch, cols)
    ref = x.double() @ dense.double().T
    scale = x.double().abs() @ dense.double().abs().T
    got, fine = plain(x), exact(x)
    assert got.dtype == fine.dtype == torch.float32 and got.shape == fine.shape == (batch, rows)
    # One bfloat16 call: inputs, scales and outputs each rounded, about 2**-9 relative.
    assert ((got.double() - ref).abs() <= 2**-8 * ref.abs() + 2**-7 * scale).all()
    # Three calls: only products of remainders are left (about 2**-17 relative).
    assert ((fine.double() - ref).abs() <= 2**-15 * scale).all()
    assert (fine.double() - ref).abs().max() * 100 < (got.double() - ref).abs().max()


def test_exact_matrix_leaves_its_spare_groups_zero_and_serves_threads(quantised: Any) -> None:
    """The output correction writes the spare groups' scales per call; afterwards they are
    zero again, and threads sharing one matrix each get their own exact product."""
    from concurrent.futures import ThreadPoolExecutor

    blocks, dense = quantised(192, 576, "Q4_1")
    lin = pack_blocks(blocks, "Q4_1", (192, 576))
    xs = [torch.randn(n, 576) for n in (1, 3, 1, 9, 1, 2) * 4]
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lin, xs))
    for x, y in zip(xs, outs, strict=True):
        ref = x.double() @ dense.double().T
        assert ((y.double() - ref).abs() <= 2**-15 * (x.abs().double() @ dense.abs().double().T)).all()
    assert not lin.scales_zeros[-lin.spare :].any()
    # A bfloat16 input takes the single call (a bf16 compute dtype asks for no more).
    xb = torch.randn(2, 576).bfloat16()
    assert lin(xb).dtype == torch.bfloat16


def test_fused_rows_equal_their_matrices_packed_alone(quantised: Any) -> None:
    parts = [quantised(rows, 576, "Q4_1", seed)[0] for seed, rows in enumerate((576, 192, 192))]
    order = np.random.default_rng(4).permutation(192)
    fused = fuse_rows([(parts[0], None), (parts[1], order), (parts[2], None)], "Q4_1", 576)
    assert [s.out_features for s in fused] == [576, 192, 192]
    for x in (torch.randn(1, 576), torch.randn(7, 576)):
        whole = fused[0].whole(x)
        for i, (part, piece) in enumerate(zip(parts, fused, strict=True)):
            alone = packed_matrix(part, "Q4_1", (part.shape[0], 576), order if i == 1 else None)(x)
            assert torch.equal(piece(x), alone)
            assert torch.equal(whole[:, piece.start : piece.stop], alone)


def test_packed_matmul_is_exact_on_bfloat16_grid() -> None:
    """With bf16 inputs and bf16-exact scales the kernel result is the rounded exact product:
    the Q4_1 to int4 mapping (scale d, zero m + 8 d) loses nothing."""
    rows, cols = 64, 128
    rng = np.random.default_rng(3)
    q = rng.integers(0, 16, (rows, cols // 32, 32), dtype=np.uint8)
    d = (rng.integers(1, 64, (rows, cols // 32)) / 1024).astype(np.float16)
    m = (-rng.integers(0, 64, (rows, cols // 32)) / 128).astype(np.float16)
    qs = (q[..., :16] | (q[..., 16:] << 4)).astype(np.uint8)
    blocks = np.concatenate([d[..., None].view(np.uint8), m[..., None].view(np.uint8), qs], axis=-1)
    blocks = blocks.reshape(rows, -1)
    dense = torch.from_numpy(gguf.dequantize(blocks, Q.Q4_1).astype(np.float32))
    lin = pack_blocks(blocks, "Q4_1", (rows, cols), exact=False)
    x = torch.randn(3, cols).to(torch.bfloat16)
    exact = (x.double() @ dense.double().T).to(torch.bfloat16)
    assert torch.equal(lin(x), exact)


def test_packing_follows_row_order(quantised: Any) -> None:
    blocks, dense = quantised(64, 64, "Q4_1")
    order = np.random.default_rng(1).permutation(64)
    x = torch.randn(2, 64)
    assert torch.allclose(pack_blocks(blocks, "Q4_1", (64, 64), order)(x),
                          pack_blocks(blocks[order], "Q4_1", (64, 64))(x), rtol=0, atol=0)
    assert torch.allclose(pack_blocks(blocks, "Q4_1", (64, 64), order)(x), x @ dense[order].T,
                          atol=1e-2)


@pytest.mark.parametrize("qtype", ["Q4_1", "Q8_0", "Q4_0", "Q5_1", "Q2_K", "Q4_K", "Q6_K"])
def test_row_table_reads_rows_exactly(random_blocks: Any, qtype: str) -> None:
    blocks, dense = random_blocks(100, 256, qtype)
    ids = torch.tensor([0, 99, 7, 7, 42])
    got = row_table(blocks, qtype, (100, 256), torch.float32).lookup(ids)
    assert torch.equal(got, F.embedding(ids, dense))


def test_row_table_of_float16_rows_reads_their_bytes() -> None:
    """A float16 table arrives from the file as float16 values: its rows are read as bytes."""
    dense = torch.randn(50, 64).half()
    table = row_table(dense.numpy(), "F16", (50, 64), torch.float32)
    assert table.rows.dtype == np.uint8 and table.rows.shape == (50, 128)
    assert torch.equal(table.lookup(torch.tensor([3, 49])), dense[[3, 49]].float())


def mapped_rss_kib(address: int) -> int:
    """Resident KiB of this process's mapping that holds `address` (/proc/self/smaps)."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            span = re.match(r"([0-9a-f]+)-([0-9a-f]+) ", line)
            if span:
                inside = int(span[1], 16) <= address < int(span[2], 16)
            elif inside and line.startswith("Rss:"):
                return int(line.split()[1])
    raise AssertionError(f"no mapping holds {address:#x}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_row_lookups_keep_few_table_pages_resident(smollm_path: Path) -> None:
    """Decoding reads an embedding row or a few head rows per token; they are read from the
    file, not through the memory map, so the process's memory does not grow with the text."""
    file = GGUFModelFile(smollm_path)
    blocks, qtype = file.raw("token_embd.weight")
    vocab, hidden = file.config.vocab_size, file.config.hidden
    table = row_table(blocks, qtype, (vocab, hidden), torch.float32,
                      (str(file.path), file.file_offset(blocks)))
    rows = np.random.default_rng(0).integers(0, vocab, 3000)
    before = mapped_rss_kib(blocks.ctypes.data)
    got = torch.cat([table.lookup(torch.tensor([r])) for r in rows.tolist()])
    # Through the map, each row faulted in the pages around it: 3000 rows held megabytes.
    assert mapped_rss_kib(blocks.ctypes.data) - before <= 64
    dense = torch.from_numpy(gguf.dequantize(np.asarray(blocks[rows]), Q[qtype]).astype(np.float32))
    assert torch.equal(got, dense)
    with pytest.raises(ValueError, match="not a view"):
        file.file_offset(np.zeros(4, dtype=np.uint8))


def test_row_file_refuses_rows_it_does_not_hold(tmp_path: Path) -> None:
    path = tmp_path / "table.bin"
    path.write_bytes(bytes(range(64)) * 4)  # 4 rows of 64 bytes, then the file is cut
    rows = RowFile(str(path), 0, 5, 64)
    assert rows.read(np.array([3, 0])).tolist() == [list(range(64))] * 2
    with pytest.raises(IndexError, match="outside"):
        rows.read(np.array([5]))
    with pytest.raises(GGUFFormatError, match="ends early"):
        rows.read(np.array([4]))


@pytest.mark.parametrize("qtype", ["Q4_1", "Q8_0"])
def test_rescored_head_logits_near_the_top_are_float32_exact(quantised: Any, qtype: str) -> None:
    blocks, dense = quantised(256, 64, qtype)
    head = requantise_head(blocks, qtype, (256, 64), torch.float32)
    assert head.packed.packed.nbytes == 256 * 64 // 2  # int4 codes, whatever the GGUF type
    x = torch.randn(5, 64) * 3
    ref = F.linear(x, dense)
    got = head(x)
    assert torch.equal(got.argmax(-1), ref.argmax(-1))
    near = ref >= ref.amax(-1, keepdim=True) - head.margin
    assert torch.allclose(got[near], ref[near], rtol=1e-5, atol=1e-5)
    rest = (got - ref).abs()[~near]
    assert 0 < rest.max() < 1.0  # the rest keep their int4 values, a little off
    z = head.errors_in_sigmas(x)  # what the rescoring's reach assumes holds
    assert z.shape == ref.shape and 0 < z.max() < head.sigmas
    with pytest.raises(GGUFFormatError, match="multiples of 16"):
        requantise_head(blocks[:250], qtype, (250, 64), torch.float32)


@pytest.mark.parametrize("qtype", ["Q4_K", "Q6_K"])
def test_a_head_of_k_quants_is_requantised_and_rescored(random_blocks: Any, qtype: str) -> None:
    blocks, dense = random_blocks(256, 256, qtype)
    head = requantise_head(blocks, qtype, (256, 256), torch.float32)
    x = torch.randn(5, 256)
    ref, got = F.linear(x, dense), head(x)
    assert torch.equal(got.argmax(-1), ref.argmax(-1))
    near = ref >= ref.amax(-1, keepdim=True) - head.margin
    assert torch.allclose(got[near], ref[near], rtol=1e-5, atol=1e-5)


def test_bad_blocks_are_refused(quantised: Any) -> None:
    blocks, _ = quantised(64, 64, "Q4_1")
    with pytest.raises(GGUFFormatError, match="expected"):
        pack_blocks(blocks, "Q4_1", (64, 96))
    with pytest.raises(GGUFFormatError, match="expected"):
        pack_blocks(blocks[:, :-1], "Q4_1", (64, 64))
    with pytest.raises(GGUFFormatError, match="Q4_K cannot be repacked for torch's int4"):
        pack_blocks(blocks, "Q4_K", (64, 64))
    with pytest.raises(GGUFFormatError, match="IQ4_NL cannot be kept packed"):
        block_matrix(blocks, "IQ4_NL", (64, 64), None)
    with pytest.raises(GGUFFormatError, match="needs rows of whole blocks of 256, got 64"):
        block_matrix(blocks, "Q4_K", (64, 64), None)
    with pytest.raises(GGUFFormatError, match="whole blocks"):
        row_table(blocks, "Q8_0", (64, 48), torch.float32)
    with pytest.raises(UnsupportedModelError, match="unknown GGML type Q9_9"):
        row_table(blocks, "Q9_9", (64, 64), torch.float32)
    with pytest.raises(UnsupportedModelError, match="Q8_K cannot be dequantised"):
        row_table(np.zeros((1, 292), dtype=np.uint8), "Q8_K", (1, 256), torch.float32)


def test_dense_linear_casts_to_its_storage_and_back() -> None:
    w = torch.randn(8, 16)
    lin = DenseLinear(w.to(torch.bfloat16))
    x = torch.randn(3, 16)
    assert lin(x).dtype == torch.float32
    assert torch.equal(lin(x), F.linear(x.bfloat16(), w.bfloat16()).float())


def test_unknown_weights_mode_is_refused(tiny_gguf: Path) -> None:
    with pytest.raises(ModelError, match="weights mode must be one of"):
        ShardExecutor.load(GGUFModelFile(tiny_gguf), [Stage(0, 1)], weights="int3")


def test_packed_shard_holds_only_its_layers(tiny_gguf: Path) -> None:
    file = GGUFModelFile(tiny_gguf)
    ex = ShardExecutor.load(file, [Stage(1, 3)], weights="packed")
    assert sorted(ex.weights.attention) == [1, 2] and sorted(ex.weights.mlp) == [1, 2]
    assert ex.weights.embedding is None and ex.weights.head is None
    assert all(name.startswith(("blk.1.", "blk.2.")) for name in file.loaded)
    a, m = ex.weights.attention[1], ex.weights.mlp[2]
    assert all(isinstance(unfused(w), PACKED) for w in (a.q, a.k, a.v, a.o, m.gate, m.down))
    # q, k and v share one packed matrix (one kernel pass), as do gate and up.
    assert unfused(a.q) is unfused(a.k) is unfused(a.v) and unfused(m.gate) is unfused(m.up)
    fp32 = ShardExecutor.load(GGUFModelFile(tiny_gguf), [Stage(1, 3)])
    # On torch's int4 kernel the tiny model's rows are 64 wide, so the four spare groups
    # (128 columns) weigh as much as the weights; the real model's packed layers are a fifth
    # of float32 (a sixth on our kernel, which reads the GGUF's own bytes).
    assert ex.weights.nbytes() < fp32.weights.nbytes() / 1.5


@pytest.mark.parametrize("weights", ["packed", "bf16"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tiny_splits_are_bit_identical_in_every_mode(
    tiny_gguf: Path, weights: str, dtype: torch.dtype
) -> None:
    file = GGUFModelFile(tiny_gguf)
    single = LocalPipeline.load_single(file, dtype=dtype, weights=weights)
    prompt, follow = [5, 70, 200, 31, 99, 4, 150, 8, 17], [33, 101, 7, 250, 3]
    ref = run_steps(single, prompt, follow)
    for make in (lambda n: even_stages(n, 3), lambda n: split_parts(Stage(0, n))):
        client = ShardExecutor.load(file, (), embed=True, head=True, dtype=dtype, weights=weights)
        hops = [(ShardExecutor.load(file, [s], dtype=dtype, weights=weights), s)
                for s in make(file.config.n_layers)]
        assert_bit_identical(ref, run_steps(LocalPipeline(client, hops), prompt, follow))


@pytest.mark.parametrize("weights", ["packed", "bf16"])
def test_tiny_modes_agree_with_fp32(tiny_gguf: Path, weights: str) -> None:
    file = GGUFModelFile(tiny_gguf)
    ids = list(range(3, 60))
    ref = LocalPipeline.load_single(file).new_session(kv_factory("fp32")).forward(ids, all_logits=True)
    got = LocalPipeline.load_single(file, weights=weights).new_session(kv_factory("fp32")).forward(
        ids, all_logits=True)
    assert (got - ref).abs().max() < 0.05 * ref.abs().max()
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.9


def test_chunked_prefill_feeds_every_id_in_order() -> None:
    fed: list[list[int]] = []

    def step(ids: list[int]) -> torch.Tensor:
        fed.append(list(ids))
        return torch.tensor(float(ids[-1]))

    assert chunked(step, 4)(list(range(10))).item() == 9
    assert fed == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    with pytest.raises(ModelError):
        chunked(step, 0)
    with pytest.raises(ModelError, match="no token ids"):
        chunked(step, 4)([])


def test_chunked_prefill_matches_one_shot(tiny_gguf: Path) -> None:
    pipe = LocalPipeline.load_single(GGUFModelFile(tiny_gguf), weights="packed")
    ids = list(range(3, 40))
    whole = pipe.new_session(kv_factory("fp32")).forward(ids)
    parts = chunked(pipe.new_session(kv_factory("fp32")).forward, 8)(ids)
    assert (whole - parts).abs().max() < 0.005 * whole.abs().max()  # bf16 roundings differ
    assert torch.equal(whole.argmax(), parts.argmax())


def test_set_threads_checks_its_argument() -> None:
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
        with pytest.raises(ModelError, match="positive integer"):
            set_threads(0)
    finally:
        torch.set_num_threads(before)

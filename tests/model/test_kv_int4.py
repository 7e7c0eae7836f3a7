"""INT4 KV cache (KIVI): windows kept exact, bounded error, chunking-independent codes, truncate,
wire form, hostile blobs, bytes per token, and quality on the real model."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hive_core.model.kv.cache import DenseKV, KVCache, KVWireError
from hive_core.model.kv.int4 import NAIVE_G32, Int4Config, Int4KV, pack_codes, unpack_codes
from hive_core.model.kv.quality import compare, teacher_forced

TEXT = Path(__file__).resolve().parents[2] / "bench" / "data" / "kv_text.txt"
SMALL = Int4Config(key_group=8, value_group=16, residual=4, sink=2)


def _kv(t: int, h: int = 3, d: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(h, t, d, generator=g)
    k[:, :, 5] += 20.0  # an outlier channel, as real keys have
    return k, torch.randn(h, t, d, generator=g)


def _feed(cache: Int4KV, k: torch.Tensor, v: torch.Tensor, chunks: list[int]) -> Any:
    out, pos = None, 0
    for n in chunks:
        out = cache.append(k[:, pos:pos + n], v[:, pos:pos + n])
        pos += n
    assert pos == k.shape[1]
    return out


def test_is_a_kvcache_and_rejects_bad_configs() -> None:
    assert isinstance(Int4KV(), KVCache) and Int4KV.kind == "int4"
    for bad in ({"bits": 3}, {"key_group": 0}, {"residual": -1}, {"sink": 70000}):
        with pytest.raises(ValueError):
            Int4Config(**bad)
    with pytest.raises(ValueError, match="multiple"):
        Int4KV(Int4Config(value_group=24)).append(*_kv(2))
    narrow = Int4KV(Int4Config(residual=0, sink=0))  # head_dim 16 < value_group 64: one group
    _, vo = narrow.append(*_kv(3, d=16))
    # keys wait for a 64-token group in 16 bits; values: 8 code bytes + fp16 scale and min
    assert vo.shape == (3, 3, 16) and narrow.nbytes() == 3 * 3 * 16 * 2 + 3 * 3 * (8 + 4)


def test_sink_and_recent_window_are_exact_and_the_rest_is_bounded() -> None:
    k, v = _kv(40)
    ko, vo = Int4KV(SMALL).append(k, v)
    assert ko.shape == vo.shape == k.shape
    half = lambda x: x.to(torch.float16).float()  # the windows are 16-bit
    for got, want in ((ko, k), (vo, v)):
        assert torch.equal(got[:, :2], half(want[:, :2]))  # sink
        assert torch.equal(got[:, -4:], half(want[:, -4:]))  # recent window
    # Quantised: within half a step of a 4-bit grid spanning each group's range.
    v_span = v[:, 2:-4].reshape(3, -1, 2, 16)
    step = (v_span.amax(-1) - v_span.amin(-1)) / 15
    err = (vo[:, 2:-4] - v[:, 2:-4]).abs().reshape(3, -1, 2, 16).amax(-1)
    assert bool((err <= step / 2 * 1.01 + 1e-3).all())
    assert (ko[:, 2:-4] - k[:, 2:-4]).abs().max() < 0.5  # the +20 channel has its own scale
    assert not torch.equal(ko[:, 2:-4], k[:, 2:-4])


def test_codes_do_not_depend_on_how_tokens_arrive() -> None:
    k, v = _kv(53)
    whole = Int4KV(SMALL)
    a = _feed(whole, k, v, [53])
    for chunks in ([1] * 53, [7, 1, 20, 25], [3, 50]):
        other = Int4KV(SMALL)
        b = _feed(other, k, v, chunks)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert other.to_bytes() == whole.to_bytes()


def test_fresh_dequantisation_equals_the_kept_copy() -> None:
    k, v = _kv(45)
    kept = _feed(Int4KV(SMALL), k, v, [10, 1, 1, 33])
    fresh = _feed(Int4KV(SMALL, cache_dequantised=False), k, v, [10, 1, 1, 33])
    assert torch.equal(kept[0], fresh[0]) and torch.equal(kept[1], fresh[1])


@pytest.mark.parametrize("length", [0, 1, 2, 5, 17, 30, 39])
def test_truncate_keeps_the_prefix_and_appends_again(length: int) -> None:
    k, v = _kv(40)
    cache = Int4KV(SMALL)
    ko, vo = (x.clone() for x in cache.append(k, v))
    cache.truncate(length)
    assert len(cache) == length
    empty = k[:, :0]
    kt, vt = cache.append(empty, empty)  # nothing stored is quantised again by truncating
    assert torch.equal(kt, ko[:, :length]) and torch.equal(vt, vo[:, :length])
    k2, v2 = _kv(6, seed=1)
    ko2, vo2 = (x.clone() for x in cache.append(k2, v2))
    assert len(cache) == length + 6 and ko2.shape[1] == length + 6
    assert torch.equal(ko2[:, :min(length, 2)], ko[:, :min(length, 2)])  # the sink never moves
    back = Int4KV.from_bytes(cache.to_bytes())
    kb, vb = back.append(empty, empty)
    assert torch.equal(kb, ko2) and torch.equal(vb, vo2)
    with pytest.raises(ValueError):
        cache.truncate(-1)


@pytest.mark.parametrize("config", [Int4Config(), SMALL, NAIVE_G32, Int4Config(bits=2, sink=1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_wire_round_trip(config: Int4Config, dtype: torch.dtype) -> None:
    k, v = _kv(150, d=64)
    cache = Int4KV(config)
    ko, vo = (x.clone() for x in _feed(cache, k.to(dtype), v.to(dtype), [100, 1, 49]))
    blob = cache.to_bytes()
    back = Int4KV.from_bytes(blob)
    assert back.config == config and len(back) == 150 and back.to_bytes() == blob
    assert back.nbytes() == cache.nbytes()
    kb, vb = back.append(k[:, :0].to(dtype), v[:, :0].to(dtype))
    assert torch.equal(kb, ko) and torch.equal(vb, vo)
    kn, vn = (x.to(dtype) for x in _kv(1, d=64, seed=9))  # the copy goes on like the original
    kb, vb = (x.clone() for x in back.append(kn, vn))
    ko, vo = cache.append(kn, vn)
    assert torch.equal(kb, ko) and torch.equal(vb, vo)
    assert Int4KV.from_bytes(Int4KV(config).to_bytes()).to_bytes() == Int4KV(config).to_bytes()


def test_malformed_blobs_raise_wire_errors() -> None:
    cache = Int4KV(SMALL)
    cache.append(*_kv(30))
    blob = cache.to_bytes()
    for cut in (0, 3, 10, len(blob) // 2, len(blob) - 1):
        with pytest.raises(KVWireError):
            Int4KV.from_bytes(blob[:cut])
    with pytest.raises(KVWireError, match="trailing"):
        Int4KV.from_bytes(blob + b"\0")
    with pytest.raises(KVWireError, match="bad magic"):
        Int4KV.from_bytes(b"CKVD" + blob[4:])
    with pytest.raises(KVWireError, match="exceeds the limit"):
        Int4KV.from_bytes(blob, max_bytes=100)
    with pytest.raises(KVWireError):
        Int4KV.from_bytes(DenseKV().to_bytes())


@settings(max_examples=150, deadline=None)
@given(pos=st.integers(0, 400), byte=st.integers(0, 255))
def test_corrupted_bytes_only_raise_wire_errors(pos: int, byte: int) -> None:
    cache = Int4KV(SMALL)
    cache.append(*_kv(20))
    blob = bytearray(cache.to_bytes())
    blob[pos % len(blob)] = byte
    try:
        Int4KV.from_bytes(bytes(blob))
    except KVWireError:
        pass


def test_pack_unpack_round_trip() -> None:
    codes = torch.randint(0, 16, (3, 5, 64), dtype=torch.uint8)
    assert torch.equal(unpack_codes(pack_codes(codes, 4), 4), codes)
    codes2 = codes & 3
    assert pack_codes(codes2, 2).shape[-1] == 16
    assert torch.equal(unpack_codes(pack_codes(codes2, 2), 2), codes2)


def test_bytes_per_token_on_a_long_sequence() -> None:
    # SmolLM2's shape per layer: 3 KV heads of 64; 4096 tokens amortise the 16-bit windows.
    k, v = _kv(4096, h=3, d=64)
    cache = Int4KV()
    cache.append(k, v)
    fp16 = 2 * 3 * 64 * 2 * 4096
    assert Int4Config().bytes_per_value() / 2 == pytest.approx(0.2734375)  # the long-run limit
    assert 0.25 < cache.nbytes() / fp16 <= 0.30
    naive = Int4KV(NAIVE_G32)
    naive.append(k, v)
    assert naive.nbytes() / fp16 == pytest.approx(0.3125)  # 4 bits + two fp16 per 32 values


@pytest.mark.real_model
def test_real_model_quality_against_the_full_precision_cache(smollm: Any) -> None:
    ids = smollm.tokenizer.encode(TEXT.read_text())[:320]
    ref = teacher_forced(smollm.pipeline, ids, DenseKV)
    assert 5 < ref.perplexity < 60  # a coherent English text, not noise
    kivi = compare(smollm.pipeline, ids, functools.partial(Int4KV, Int4Config()), ref)
    assert kivi.ppl_change < 0.03
    assert kivi.top1_agreement >= 0.95
    naive = compare(smollm.pipeline, ids, functools.partial(Int4KV, NAIVE_G32), ref)
    assert naive.top1_agreement < kivi.top1_agreement


def test_teacher_forced_checks_its_input_and_counts_every_layer(tiny_gguf: Path) -> None:
    from hive_core.model.errors import ModelError
    from hive_core.model.gguf_file import GGUFModelFile
    from hive_core.model.pipeline import LocalPipeline

    pipeline = LocalPipeline.load_single(GGUFModelFile(tiny_gguf))
    for ids, chunk, message in (([5], 8, "at least two"), ([5, 6], 0, "chunk"),
                                (list(range(65)), 8, "exceed the model's context")):
        with pytest.raises(ModelError, match=message):
            teacher_forced(pipeline, ids, DenseKV, chunk=chunk)
    ids = list(range(3, 43))
    whole = teacher_forced(pipeline, ids, DenseKV, chunk=64)
    pieces = teacher_forced(pipeline, ids, DenseKV, chunk=7)
    assert whole.nll.shape == whole.top1.shape == (39,)
    assert torch.allclose(whole.nll, pieces.nll, atol=1e-4)
    assert whole.kv_bytes == 4 * 2 * 2 * 40 * 16 * 4  # layers, k+v, heads, positions, dim, fp32
    same = compare(pipeline, ids, DenseKV, whole, chunk=5)
    assert same.top1_agreement == 1.0 and abs(same.ppl_change) < 1e-4

"""DenseKV: the full-precision cache contract and its wire form."""

from __future__ import annotations

import struct

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hive_core.model.kv.cache import (
    DENSE_MAGIC,
    WIRE_VERSION,
    DenseKV,
    KVCache,
    KVWireError,
)


def _kv(h: int = 3, t: int = 5, d: int = 8, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(t)
    return torch.randn(h, t, d, generator=g).to(dtype), torch.randn(h, t, d, generator=g).to(dtype)


def test_dense_is_a_kvcache() -> None:
    assert isinstance(DenseKV(), KVCache)
    assert DenseKV.kind == "fp32"


def test_append_returns_everything_so_far_and_truncate_forgets() -> None:
    cache = DenseKV()
    k1, v1 = _kv(t=4)
    k2, v2 = _kv(t=3)
    cache.append(k1, v1)
    k_all, v_all = cache.append(k2, v2)
    assert torch.equal(k_all, torch.cat([k1, k2], 1))
    assert torch.equal(v_all, torch.cat([v1, v2], 1))
    assert len(cache) == 7
    assert cache.nbytes() == 2 * 3 * 7 * 8 * 4
    cache.truncate(5)
    assert len(cache) == 5
    k_all, _ = cache.append(k2[:, :1], v2[:, :1])
    assert torch.equal(k_all, torch.cat([k1, k2[:, :1], k2[:, :1]], 1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_round_trip_is_exact(dtype: torch.dtype) -> None:
    cache = DenseKV()
    k, v = _kv(t=9, dtype=dtype)
    cache.append(k, v)
    blob = cache.to_bytes()
    assert blob[:4] == DENSE_MAGIC
    back = DenseKV.from_bytes(blob)
    assert len(back) == 9
    k2, v2 = back.append(k[:, :1], v[:, :1])
    k1, v1 = cache.append(k[:, :1], v[:, :1])
    assert k2.dtype == dtype
    assert torch.equal(k1, k2) and torch.equal(v1, v2)
    assert back.to_bytes() != blob  # it grew by one position, the same as the original
    assert back.to_bytes() == cache.to_bytes()


def test_empty_round_trip() -> None:
    back = DenseKV.from_bytes(DenseKV().to_bytes())
    assert len(back) == 0 and back.nbytes() == 0


def test_payload_is_little_endian_raw() -> None:
    cache = DenseKV()
    k = torch.tensor([[[1.0, 2.0]]])
    cache.append(k, -k)
    blob = cache.to_bytes()
    assert blob.endswith(struct.pack("<4f", 1.0, 2.0, -1.0, -2.0))


def _blob() -> bytes:
    cache = DenseKV()
    cache.append(*_kv(t=6))
    return cache.to_bytes()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:-1], "truncated KV blob"),
        (lambda b: b[:10], "truncated KV blob"),
        (lambda b: b + b"\0", "trailing bytes"),
        (lambda b: b"XXXX" + b[4:], "bad magic"),
        (lambda b: b[:4] + struct.pack("<H", WIRE_VERSION + 1) + b[6:], "unsupported KV wire version"),
        (lambda b: b[:6] + b"\x09" + b[7:], "unknown dtype code 9"),
        (lambda b: b[:7] + struct.pack("<I", 5000) + b[11:], "heads 5000 out of range"),
    ],
)
def test_malformed_blobs_raise_wire_error(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(KVWireError, match=message):
        DenseKV.from_bytes(mutate(_blob()))


def test_size_limit_is_enforced_before_parsing() -> None:
    blob = _blob()
    with pytest.raises(KVWireError, match="exceeds the limit"):
        DenseKV.from_bytes(blob, max_bytes=len(blob) - 1)


def test_not_bytes_is_a_wire_error() -> None:
    with pytest.raises(KVWireError, match="expected bytes"):
        DenseKV.from_bytes("CKVD")  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_only_raise_wire_error(data: bytes) -> None:
    try:
        DenseKV.from_bytes(data)
    except KVWireError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 255))
def test_corrupted_header_only_raises_wire_error(pos: int, byte: int) -> None:
    """Every header field is checked against the payload, so a changed header byte is a
    `KVWireError` (never another exception, never a cache of another shape); an unchanged one
    parses back to the same bytes."""
    original = _blob()
    blob = bytearray(original)
    blob[pos % 19] = byte  # the header is 19 bytes
    if bytes(blob) == original:
        assert DenseKV.from_bytes(bytes(blob)).to_bytes() == original
    else:
        with pytest.raises(KVWireError):
            DenseKV.from_bytes(bytes(blob))

"""Tensor chunking below the data-channel limit and bounded, strict reassembly."""

from __future__ import annotations

import random

import numpy as np
import pytest

from hive_core.protocol import (
    MAX_CHUNK_PAYLOAD,
    MAX_FRAME_BYTES,
    Dtype,
    ProtocolError,
    Reassembler,
    TensorChunk,
    chunk_tensor,
    decode,
    encode,
)


def test_large_tensor_is_chunked_below_the_frame_limit_and_rebuilt_in_any_order() -> None:
    rng = np.random.default_rng(0)
    array = rng.standard_normal((3, 64, 576)).astype(np.float32)  # ~442 KiB
    chunks = list(chunk_tensor(array, stream_id=9, sequence=4, layer=17, tag=2))
    assert len(chunks) == 2
    frames = [encode(c) for c in chunks]
    assert all(len(f) <= MAX_FRAME_BYTES for f in frames)
    random.Random(1).shuffle(frames)
    frames.insert(1, frames[0])  # a duplicate is harmless
    r = Reassembler()
    results = [r.feed(decode(f), source=b"peer") for f in frames]
    done = [t for t in results if t is not None]
    assert len(done) == 1
    tensor = done[0]
    assert (tensor.stream_id, tensor.sequence, tensor.layer, tensor.tag) == (9, 4, 17, 2)
    assert tensor.dtype is Dtype.F32
    np.testing.assert_array_equal(tensor.to_numpy(), array)
    assert r.pending_bytes == 0 and len(r) == 0


@pytest.mark.parametrize("dtype", [np.float16, np.int8, np.int64, np.bool_, np.uint8, np.float64])
def test_dtypes_round_trip_little_endian(dtype: type) -> None:
    array = (np.arange(24) % 2).astype(dtype).reshape(2, 3, 4)
    big = array.astype(array.dtype.newbyteorder(">"))  # host order must not leak onto the wire
    (chunk,) = chunk_tensor(big, stream_id=1)
    assert chunk.payload == array.astype(array.dtype.newbyteorder("<")).tobytes()
    out = Reassembler().feed(decode(encode(chunk)))
    assert out is not None
    np.testing.assert_array_equal(out.to_numpy(), array)


def test_bfloat16_travels_as_raw_bits() -> None:
    bits = np.array([0x3F80, 0xC000], dtype=np.uint16)
    (chunk,) = chunk_tensor(bits, stream_id=1, dtype=Dtype.BF16)
    out = Reassembler().feed(chunk)
    assert out is not None and out.dtype is Dtype.BF16
    np.testing.assert_array_equal(out.to_numpy(), bits)


def test_empty_tensor() -> None:
    (chunk,) = chunk_tensor(np.zeros((0, 5), np.float32), stream_id=1)
    out = Reassembler().feed(decode(encode(chunk)))
    assert out is not None and out.shape == (0, 5)


def test_inconsistent_chunks_are_rejected() -> None:
    array = np.arange(1000, dtype=np.float32)
    a, b, _ = chunk_tensor(array, stream_id=5, chunk_bytes=1500)
    r = Reassembler()
    assert r.feed(a) is None
    forged = TensorChunk(5, 0, 0, 0, Dtype.F32, (999,), 1, 3, b.payload)
    with pytest.raises(ProtocolError, match=r"^chunk 1 disagrees with the tensor's header$"):
        r.feed(forged)
    assert len(r) == 0  # that tensor was discarded
    r.feed(a)
    other = TensorChunk(5, 0, 0, 0, Dtype.F32, (1000,), 0, 3, bytes(len(a.payload)))
    with pytest.raises(ProtocolError, match=r"^chunk 0 arrived twice with other bytes$"):
        r.feed(other)
    r.feed(a)
    r.feed(b)
    too_long = TensorChunk(5, 0, 0, 0, Dtype.F32, (1000,), 2, 3, bytes(2000))
    with pytest.raises(ProtocolError, match=r"^chunks exceed the tensor's 4000 bytes$"):
        r.feed(too_long)
    short = TensorChunk(5, 0, 0, 0, Dtype.F32, (1000,), 0, 1, bytes(10))
    with pytest.raises(ProtocolError, match=r"^tensor has 10 bytes, its header says 4000$"):
        r.feed(short)


def test_header_limits_are_enforced_on_decode() -> None:
    with pytest.raises(ProtocolError, match=r"^chunk 3 of 3 is out of range$"):
        TensorChunk(1, 0, 0, 0, Dtype.U8, (10,), 3, 3, b"")
    with pytest.raises(ProtocolError, match=r"exceeds the limit of 268435456$"):
        TensorChunk(1, 0, 0, 0, Dtype.F32, (1 << 20, 1 << 10), 0, 1, b"")
    frame = bytearray(encode(TensorChunk(1, 0, 0, 0, Dtype.U8, (10,), 0, 1, bytes(10))))
    frame[-14 - 8] = 9  # chunk_index 9 >= chunk_count 1
    with pytest.raises(ProtocolError, match=r"out of range$"):
        decode(bytes(frame))


def test_memory_is_bounded_and_stale_tensors_expire() -> None:
    now = [0.0]
    r = Reassembler(max_pending_bytes=10_000, max_streams=2, timeout_s=5.0, clock=lambda: now[0])
    big = np.zeros(5000, np.uint8)
    r.feed(next(chunk_tensor(big, stream_id=1, chunk_bytes=4000)))
    r.feed(next(chunk_tensor(big, stream_id=2, chunk_bytes=4000)))
    with pytest.raises(ProtocolError, match=r"^too many unfinished tensors \(limit 2\)$"):
        r.feed(next(chunk_tensor(big, stream_id=3, chunk_bytes=4000)))
    assert r.pending_bytes == 8000
    now[0] = 6.0
    assert r.expire() == 2
    assert r.pending_bytes == 0 and len(r) == 0

    small = Reassembler(max_pending_bytes=6000)
    small.feed(next(chunk_tensor(big, stream_id=1, chunk_bytes=4000)))
    with pytest.raises(ProtocolError, match=r"^reassembly buffer full \(limit 6000 bytes\)"):
        small.feed(next(chunk_tensor(big, stream_id=2, chunk_bytes=4000)))
    assert small.pending_bytes == 4000


def test_chunk_size_is_validated() -> None:
    with pytest.raises(ProtocolError, match=r"^chunk_bytes must be in"):
        list(chunk_tensor(np.zeros(4), stream_id=1, chunk_bytes=MAX_CHUNK_PAYLOAD + 1))
    with pytest.raises(ProtocolError, match=r"cannot travel on the wire$"):
        list(chunk_tensor(np.zeros(4, np.complex64), stream_id=1))

"""GGUF header parsing on hand-built files: every value type, lazy arrays, and each way a
header can be malformed giving one clear GGUFFormatError."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

import gguf
import numpy as np
import pytest

from hive_core.model.errors import GGUFFormatError
from hive_core.model.gguf_parse import (
    LAZY_MIN_COUNT,
    ArraySpan,
    ValueType,
    decode_array,
    parse_header,
)

Q8_0, F32, F16 = 8, 0, 1  # ggml type ids
V = ValueType


def _str(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def _kv(key: str, vtype: int, payload: bytes) -> bytes:
    return _str(key) + struct.pack("<I", vtype) + payload


def _array(item: int, values: list[bytes]) -> bytes:
    return struct.pack("<IQ", item, len(values)) + b"".join(values)


def _tensor(name: str, dims: tuple[int, ...], ggml_type: int, offset: int) -> bytes:
    return (_str(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
            + struct.pack("<IQ", ggml_type, offset))


def _gguf(kvs: Sequence[bytes] = (), tensors: Sequence[bytes] = (), data: bytes = b"", *,
          version: int = 3, n_kv: int | None = None, n_tensors: int | None = None,
          alignment: int = 32) -> bytes:
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                                 len(kvs) if n_kv is None else n_kv)
    head += b"".join(kvs) + b"".join(tensors)
    return head + bytes(-len(head) % alignment) + data


EVERY_TYPE = [
    _kv("u8", ValueType.UINT8, struct.pack("<B", 200)),
    _kv("i8", ValueType.INT8, struct.pack("<b", -5)),
    _kv("u16", ValueType.UINT16, struct.pack("<H", 65535)),
    _kv("i16", ValueType.INT16, struct.pack("<h", -300)),
    _kv("u32", ValueType.UINT32, struct.pack("<I", 4_000_000_000)),
    _kv("i32", ValueType.INT32, struct.pack("<i", -7)),
    _kv("f32", ValueType.FLOAT32, struct.pack("<f", 1e-5)),
    _kv("yes", ValueType.BOOL, b"\x01"),
    _kv("no", ValueType.BOOL, b"\x00"),
    _kv("name", ValueType.STRING, _str("SmolLM2 ✓")),
    _kv("u64", ValueType.UINT64, struct.pack("<Q", 2**64 - 1)),
    _kv("i64", ValueType.INT64, struct.pack("<q", -(2**63))),
    _kv("f64", ValueType.FLOAT64, struct.pack("<d", 0.1)),
    _kv("langs", ValueType.ARRAY, _array(ValueType.STRING, [_str("en"), _str("")])),
    _kv("ints", ValueType.ARRAY, _array(ValueType.INT32, [struct.pack("<i", v) for v in (1, -2)])),
    _kv("flags", ValueType.ARRAY, _array(ValueType.BOOL, [b"\x00", b"\x01"])),
    _kv("empty", ValueType.ARRAY, _array(ValueType.FLOAT32, [])),
]


def test_every_value_type_decodes_as_gguf_reader_does(tmp_path: Path) -> None:
    data = _gguf(EVERY_TYPE, [_tensor("w", (32, 2), Q8_0, 0)], bytes(68))
    header = parse_header(memoryview(data))
    assert header.metadata["u32"] == 4_000_000_000 and header.metadata["i64"] == -(2**63)
    assert header.metadata["name"] == "SmolLM2 ✓" and header.metadata["yes"] is True
    assert header.metadata["f32"] == float(np.float32(1e-5))
    assert header.metadata["langs"] == ["en", ""] and header.metadata["flags"] == [False, True]
    assert header.arrays == {}
    path = tmp_path / "every.gguf"
    path.write_bytes(data)
    reader = gguf.GGUFReader(path)
    expected = {k: f.contents() for k, f in reader.fields.items()}
    assert header.metadata == expected
    assert [type(v) for v in header.metadata.values()] == [type(v) for v in expected.values()]
    (t,) = header.tensors.values()
    assert (t.name, t.dims, t.offset, t.n_bytes) == ("w", (32, 2), header.data_offset, 68)
    assert t.layout() == (np.dtype(np.uint8), (2, 34)) == (reader.tensors[0].data.dtype,
                                                          reader.tensors[0].data.shape)


def test_big_and_tokenizer_arrays_stay_in_the_file_until_decoded() -> None:
    tokens = ["<s>", "a", "Ġthe", "é"]
    numbers = list(range(LAZY_MIN_COUNT))
    data = _gguf([
        _kv("tokenizer.ggml.tokens", V.ARRAY, _array(V.STRING, [_str(t) for t in tokens])),
        _kv("big", V.ARRAY, _array(V.UINT16, [struct.pack("<H", n) for n in numbers])),
        _kv("small", V.ARRAY, _array(V.UINT16, [struct.pack("<H", 1)])),
    ])
    header = parse_header(memoryview(data))
    assert set(header.arrays) == {"tokenizer.ggml.tokens", "big"}
    assert header.metadata["small"] == [1] and "big" not in header.metadata
    span = header.arrays["tokenizer.ggml.tokens"]
    assert (span.item_type, span.count) == (ValueType.STRING, 4)
    assert decode_array(memoryview(data), span, "tokens") == tokens
    assert decode_array(memoryview(data), header.arrays["big"], "big") == numbers


def test_alignment_and_tensor_offsets() -> None:
    align = _kv("general.alignment", ValueType.UINT32, struct.pack("<I", 64))
    data = _gguf([align], [_tensor("a", (4,), F32, 0), _tensor("b", (2, 2), F16, 64)],
                 bytes(64 + 8), alignment=64)
    header = parse_header(memoryview(data))
    assert header.alignment == 64 and header.data_offset % 64 == 0
    assert header.tensors["b"].offset == header.data_offset + 64
    assert header.tensors["b"].layout() == (np.dtype(np.float16), (2, 2))


def _hostile_cases() -> list[tuple[str, bytes, str]]:
    ok_tensor = _tensor("w", (32,), F32, 0)
    align = "general.alignment"
    return [
        ("bad magic", b"GGML" + bytes(20), "not a GGUF file"),
        ("version 1", _gguf(version=1), "unsupported GGUF version 1"),
        ("big-endian", _gguf(version=3 << 24), "big-endian GGUF files are not supported"),
        ("version 2**31", _gguf(version=2**31), "unsupported GGUF version 2147483648"),
        ("header cut", _gguf()[:12], "truncated: tensor count"),
        ("absurd kv count", _gguf(n_kv=2**62), r"truncated: 4611686018427387904 metadata entries"),
        ("absurd tensor count", _gguf(n_tensors=2**40), "tensor infos .* cannot fit"),
        ("string past end", _gguf([_kv("k", ValueType.STRING, struct.pack("<Q", 2**63))]),
         "truncated: k at byte"),
        ("key past end", _gguf([struct.pack("<Q", 10**12) + b"x"]), "truncated: metadata key"),
        ("array count past end",
         _gguf([_kv("a", ValueType.ARRAY, struct.pack("<IQ", ValueType.STRING, 2**61))]),
         "truncated: 2305843009213693952 elements of a"),
        ("array element past end",
         _gguf([_kv("a", ValueType.ARRAY, struct.pack("<IQQ", ValueType.STRING, 1, 2**40))]),
         r"truncated: a\[0\] ends at byte"),
        ("unknown value type", _gguf([_kv("k", 13, b"\x00")]),
         "metadata k has unknown value type 13"),
        ("unknown element type", _gguf([_kv("k", V.ARRAY, struct.pack("<IQ", 99, 0))]),
         "metadata k has unknown value type 99"),
        ("nested array", _gguf([_kv("k", V.ARRAY, struct.pack("<IQ", V.ARRAY, 0))]),
         "array of arrays"),
        ("not utf-8", _gguf([_kv("k", V.STRING, _str(b"\xff\xfe"))]), "k at byte .* is not UTF-8"),
        ("duplicate key", _gguf([_kv("k", V.UINT8, b"\x01")] * 2), "duplicate metadata key 'k'"),
        ("duplicate of a built-in key", _gguf([_kv("GGUF.version", V.UINT8, b"\x01")]),
         "duplicate metadata key 'GGUF.version'"),
        ("alignment type", _gguf([_kv(align, V.UINT64, struct.pack("<Q", 32))]),
         "general.alignment is UINT64"),
        ("alignment zero", _gguf([_kv(align, V.UINT32, struct.pack("<I", 0))]),
         "general.alignment 0 is not a power of two"),
        ("alignment 48", _gguf([_kv(align, V.UINT32, struct.pack("<I", 48))]),
         "general.alignment 48 is not a power of two"),
        ("tensor data past end", _gguf([], [ok_tensor], bytes(127)),
         "truncated: tensor w needs bytes"),
        ("huge tensor", _gguf([], [_tensor("w", (2**32, 2**32), F32, 0)], bytes(128)),
         "truncated: tensor w needs bytes"),
        ("misaligned tensor", _gguf([], [_tensor("w", (32,), F32, 4)], bytes(256)),
         "offset 4 is not a multiple of the alignment 32"),
        ("duplicate tensor", _gguf([], [ok_tensor, ok_tensor], bytes(128)),
         "duplicate tensor name 'w'"),
        ("unknown tensor type", _gguf([], [_tensor("w", (32,), 77, 0)], bytes(128)),
         "tensor w has unknown ggml type 77"),
        ("no dimensions", _gguf([], [_tensor("w", (), F32, 0)], bytes(128)), "0 dimensions"),
        ("five dimensions", _gguf([], [_tensor("w", (1,) * 5, F32, 0)], bytes(128)),
         "5 dimensions"),
        ("partial block", _gguf([], [_tensor("w", (33,), Q8_0, 0)], bytes(128)),
         "rows of 33 values are not whole Q8_0 blocks of 32"),
        ("tensor info cut", _gguf([], [ok_tensor])[:-20], "truncated"),
    ]


@pytest.mark.parametrize(("data", "message"), [c[1:] for c in _hostile_cases()],
                         ids=[c[0] for c in _hostile_cases()])
def test_malformed_header_is_one_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(GGUFFormatError, match=message):
        parse_header(memoryview(data))


def test_lazy_string_with_bad_utf8_fails_when_decoded() -> None:
    data = _gguf([_kv("tokenizer.ggml.tokens", ValueType.ARRAY,
                      _array(ValueType.STRING, [_str("ok"), _str(b"\xc3")]))])
    span = parse_header(memoryview(data)).arrays["tokenizer.ggml.tokens"]
    assert span == ArraySpan(ValueType.STRING, 2, span.start, len(data.rstrip(b"\x00")))
    with pytest.raises(GGUFFormatError, match=r"tokens\[1\] at byte \d+ is not UTF-8"):
        decode_array(memoryview(data), span, "tokens")


def test_errors_name_the_source_and_say_truncated_or_malformed() -> None:
    with pytest.raises(GGUFFormatError) as cut:
        parse_header(memoryview(_gguf()[:12]), "m.gguf")
    assert str(cut.value) == "m.gguf is truncated: tensor count at byte 8 needs 8 bytes, 4 left"
    with pytest.raises(GGUFFormatError) as bad:
        parse_header(memoryview(_gguf([_kv("k", 13, b"\x00")])), "m.gguf")
    assert str(bad.value) == "m.gguf is malformed: metadata k has unknown value type 13"

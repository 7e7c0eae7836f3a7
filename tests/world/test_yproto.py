"""y-protocols messages: byte-exact with pycrdt's encoder, strict parsing, chunking."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Map, create_sync_message, create_update_message

from world.model import ProtocolError
from world.model.lib0 import (
    Reader,
    decode_state_vector,
    encode_state_vector,
    write_var_uint,
)
from world.model.yproto import (
    CHUNK_BYTES,
    Awareness,
    AwarenessEntry,
    Chunk,
    Edits,
    Reassembler,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    decode,
    encode,
    split,
)


def test_sync_messages_match_pycrdt_bytes() -> None:
    doc: Doc = Doc(client_id=7)
    doc.get("buildings", type=Map)["a"] = 1.0
    assert encode(SyncStep1(doc.get_state())) == create_sync_message(doc)
    update = doc.get_update()
    assert encode(SyncUpdate(update)) == create_update_message(update)
    assert decode(create_update_message(update)) == SyncUpdate(update)


def test_known_bytes() -> None:
    assert encode(SyncStep1(b"\x00")) == b"\x00\x00\x01\x00"
    assert encode(SyncStep2(b"ab")) == b"\x00\x01\x02ab"
    entry = AwarenessEntry(300, 2, {"x": 1})
    assert encode(Awareness((entry,))) == b"\x01\x0c\x01\xac\x02\x02\x07{\"x\":1}"
    assert encode(Edits((b"e1", b"e22"))) == b"\x20\x02\x02e1\x03e22"
    assert write_var_uint(2**53 - 1) == b"\xff" * 7 + b"\x0f"


MESSAGES = st.one_of(
    st.binary(max_size=64).map(SyncStep1),
    st.binary(max_size=64).map(SyncStep2),
    st.binary(max_size=64).map(SyncUpdate),
    st.lists(st.binary(max_size=32), max_size=4).map(lambda xs: Edits(tuple(xs))),
    st.builds(lambda c, k, s: Awareness((AwarenessEntry(c, k, s),)),
              st.integers(0, 2**32 - 1), st.integers(0, 2**20),
              st.one_of(st.none(), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))),
    st.builds(lambda m, n, p: Chunk(m, n - 1, n, p), st.integers(0, 1000), st.integers(1, 9),
              st.binary(max_size=16)),
)


@given(MESSAGES)
@settings(max_examples=200, deadline=None)
def test_round_trip(msg: object) -> None:
    assert decode(encode(msg)) == msg  # type: ignore[arg-type]


@given(st.binary(max_size=64))
@settings(max_examples=500, deadline=None)
def test_garbage_never_crashes(data: bytes) -> None:
    try:
        decode(data)
    except ProtocolError:
        pass


@pytest.mark.parametrize(("data", "error"), [
    (b"", "truncated"),
    (b"\x07", "unknown message type 7"),
    (b"\x00\x05\x00", "unknown sync step 5"),
    (b"\x00\x00\x05ab", "truncated"),
    (b"\x00\x00\x01ab", "trailing"),
    (b"\x01\x06\x01\x01\x01\x02[]", "JSON object"),
    (b"\x21\x01\x05\x03\x00", "bad chunk 5/3"),
    (b"\xff" * 10, "too long"),
    (b"\x21\x01\x00\x02" + write_var_uint(CHUNK_BYTES + 1) + bytes(CHUNK_BYTES + 1), "exceeds"),
])
def test_malformed_messages(data: bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        decode(data)


def test_state_vector_codec() -> None:
    doc: Doc = Doc(client_id=123456789)
    doc.get("m", type=Map)["k"] = "v"
    sv = decode_state_vector(doc.get_state())
    assert sv == {123456789: 1}
    assert encode_state_vector(sv) == doc.get_state()
    with pytest.raises(ProtocolError):
        decode_state_vector(b"\x02\x01")
    with pytest.raises(ProtocolError):
        Reader(b"\x05ab").var_bytes()


def test_split_and_reassemble() -> None:
    big = encode(SyncStep2(bytes(range(256)) * 2000))  # ~512 KB
    parts = split(big, message_id=9)
    assert len(parts) == 3 and all(len(p) <= CHUNK_BYTES + 16 for p in parts)
    r = Reassembler()
    chunks = [decode(p) for p in parts]
    assert all(isinstance(c, Chunk) for c in chunks)
    assert r.add(chunks[2]) is None  # type: ignore[arg-type]
    assert r.add(chunks[0]) is None  # type: ignore[arg-type]
    assert r.add(chunks[0]) is None  # type: ignore[arg-type]  # duplicate
    assert r.add(chunks[1]) == big  # type: ignore[arg-type]
    assert split(b"small", message_id=1) == [b"small"]


def test_reassembler_is_bounded() -> None:
    r = Reassembler(max_pending=2)
    for mid in range(10):
        r.add(Chunk(mid, 0, 2, b"x"))
    assert len(r._parts) == 2
    with pytest.raises(ProtocolError, match="count changed"):
        r.add(Chunk(9, 1, 3, b"y"))

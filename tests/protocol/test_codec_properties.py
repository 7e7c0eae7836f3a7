"""Property tests: any bytes decode to a message or ProtocolError; generated messages round-trip."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hive_core.base.identity import node_id_of
from hive_core.protocol import (
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    Blob,
    Bool,
    Contact,
    EnumOf,
    Field,
    Float,
    ListOf,
    Maybe,
    Nested,
    ProtocolError,
    TensorChunk,
    Text,
    UInt,
    decode,
    encode,
    registered_messages,
)
from hive_core.protocol.tensor import itemsize

SMALL = 40  # keep generated lists and blobs small so examples stay fast


def spec_strategy(spec: Field[Any]) -> st.SearchStrategy[Any]:
    if isinstance(spec, EnumOf):
        return st.sampled_from(list(spec.enum_type))
    if isinstance(spec, UInt):
        lo, hi = spec.bounds
        return st.integers(lo, hi)
    if isinstance(spec, Float):
        return st.floats(allow_nan=False, allow_infinity=False, width=32 if spec.width == 4 else 64)
    if isinstance(spec, Bool):
        return st.booleans()
    if isinstance(spec, Blob):
        if spec.fixed:
            return st.binary(min_size=spec.max_len, max_size=spec.max_len)
        return st.binary(max_size=min(spec.max_len, SMALL))
    if isinstance(spec, Text):
        return st.text(max_size=min(spec.max_bytes // 4, SMALL))
    if isinstance(spec, ListOf):
        return st.lists(spec_strategy(spec.item), max_size=min(spec.max_count, 4)).map(tuple)
    if isinstance(spec, Maybe):
        return st.none() | spec_strategy(spec.inner)
    if isinstance(spec, Nested):
        return struct_strategy(spec.cls)
    raise AssertionError(f"no strategy for {spec!r}")


def struct_strategy(cls: type[Any]) -> st.SearchStrategy[Any]:
    if cls is Contact:
        return st.builds(
            lambda pk, addr: Contact(node_id_of(pk), pk, addr),
            st.binary(min_size=32, max_size=32),
            st.text(max_size=SMALL),
        )
    if cls is TensorChunk:
        return tensor_chunks()
    fields = {name: spec_strategy(spec) for name, spec in cls.__wire_fields__}

    def build(kw: dict[str, Any]) -> Any:
        # Messages check their own invariants (e.g. a non-empty layer range): field values
        # drawn independently may break them, and such a message cannot be sent at all.
        try:
            return cls(**kw)
        except ProtocolError:
            return None

    return st.fixed_dictionaries(fields).map(build).filter(lambda msg: msg is not None)


@st.composite
def tensor_chunks(draw: st.DrawFn) -> TensorChunk:
    kw = {name: draw(spec_strategy(spec)) for name, spec in TensorChunk.__wire_fields__
          if name not in ("shape", "chunk_index", "chunk_count", "payload")}
    shape = tuple(draw(st.lists(st.integers(0, 6), max_size=4)))
    nbytes = itemsize(kw["dtype"])
    for d in shape:
        nbytes *= d
    count = draw(st.integers(1, max(1, min(nbytes, 4))))
    index = draw(st.integers(0, count - 1))
    payload = draw(st.binary(max_size=min(nbytes, SMALL)))
    return TensorChunk(shape=shape, chunk_index=index, chunk_count=count, payload=payload, **kw)


any_message = st.sampled_from(sorted(registered_messages())).flatmap(
    lambda tag: struct_strategy(registered_messages()[tag])
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_message)
def test_generated_messages_round_trip_exactly(msg: Any) -> None:
    frame = encode(msg)
    assert len(frame) <= MAX_FRAME_BYTES
    assert frame[0] == PROTOCOL_VERSION
    back = decode(frame)
    assert back == msg
    assert type(back) is type(msg)
    assert encode(back) == frame


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=512))
def test_any_bytes_give_a_message_or_protocol_error(data: bytes) -> None:
    try:
        msg = decode(data)
    except ProtocolError:
        return
    assert dataclasses.is_dataclass(msg)
    assert encode(msg) == data  # the codec is canonical: one encoding per message


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(registered_messages())), st.binary(max_size=300))
def test_any_body_after_a_valid_header_gives_a_message_or_protocol_error(
    tag: int, body: bytes
) -> None:
    try:
        decode(bytes((PROTOCOL_VERSION, tag)) + body)
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_message, st.data())
def test_truncated_and_mutated_frames_never_raise_anything_else(msg: Any, data: st.DataObject) -> None:
    frame = encode(msg)
    cut = data.draw(st.integers(0, len(frame) - 1))
    try:
        decode(frame[:cut])
    except ProtocolError:
        pass
    else:
        raise AssertionError("a truncated frame decoded")
    pos = data.draw(st.integers(0, len(frame) - 1))
    flipped = bytearray(frame)
    flipped[pos] ^= data.draw(st.integers(1, 255))
    try:
        decode(bytes(flipped))
    except ProtocolError:
        pass

"""Signed entries on the codec (work receipts, spends, world edits): golden bytes and fuzzing.

Receipts and spends are the ledger; edits are the city. All three arrive from peers and
from stored rows, so a noisy or careless peer may send any bytes: parsing must give an
entry or the entry's own error (a ValueError), and nothing else, on every input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hive_core.base.identity import Identity
from hive_core.base.stage import Part
from hive_core.economy import ReceiptError, Spend, SpendError, WorkReceipt
from hive_core.economy import receipt as receipt_mod
from hive_core.economy import spend as spend_mod
from world.model import EditError, SignedEdit
from world.model import edit as edit_mod

GOLDEN = Path(__file__).parent / "golden"
CLIENT = Identity.from_seed(bytes(range(32)))
WORKER = Identity.from_seed(bytes(range(1, 33)))


def sample_receipt() -> WorkReceipt:
    return WorkReceipt.create(
        CLIENT, session_id=bytes(range(16)), worker_id=WORKER.node_id, layer_start=4,
        layer_end=19, part=Part.ATTENTION, tokens=77, wall_time_s=0.125,
        timestamp_ms=1_700_000_000_000, stability=0.975, temperature_c=61.5, battery_pct=42,
        on_ac=False,
    )


def sample_spend() -> Spend:
    return Spend.create(CLIENT, amount_mc=1500, purpose="building:b1 — ☂",
                        timestamp_ms=1_700_000_000_123, spend_id=bytes(range(100, 116)))


def sample_edit() -> SignedEdit:
    return SignedEdit.create(CLIENT, 7, 12, b"\x01\x02yjs-update-bytes\x00\xff")


# -- strategies: valid signed entries ----------------------------------------------------

layer_spans = st.integers(0, 4095).flatmap(lambda s: st.tuples(st.just(s), st.integers(s + 1, 4096)))

receipts = st.builds(
    lambda worker, layers, kw: WorkReceipt.create(
        CLIENT, worker_id=worker, layer_start=layers[0], layer_end=layers[1], **kw),
    st.binary(min_size=20, max_size=20).filter(lambda w: w != CLIENT.node_id),
    layer_spans,
    st.fixed_dictionaries({
        "session_id": st.binary(min_size=16, max_size=16),
        "part": st.sampled_from(list(Part)),
        "tokens": st.integers(1, 2**32 - 1),
        "wall_time_s": st.floats(1e-6, 1e6),
        "timestamp_ms": st.integers(0, 2**64 - 1),
        "stability": st.floats(0.0, 1.0),
        "temperature_c": st.none() | st.floats(-50.0, 150.0),
        "battery_pct": st.none() | st.integers(0, 100),
        "on_ac": st.booleans(),
    }),
)

spends = st.builds(
    lambda kw: Spend.create(CLIENT, **kw),
    st.fixed_dictionaries({
        "amount_mc": st.integers(1, 2**63 - 1),
        "purpose": st.text(max_size=40).filter(
            lambda t: len(t.encode("utf-8")) <= spend_mod.MAX_PURPOSE_BYTES),
        "timestamp_ms": st.integers(0, 2**64 - 1),
        "spend_id": st.binary(min_size=16, max_size=16),
    }),
)

edits = st.builds(
    lambda start, span, update: SignedEdit.create(CLIENT, start, start + span, update),
    st.integers(0, 2**31), st.integers(1, 2**31 - 1), st.binary(min_size=1, max_size=200),
)


@dataclass(frozen=True)
class Kind:
    """One signed entry type, its error, its golden file and a generator of signed ones."""

    cls: type[Any]
    error: type[ValueError]
    golden: str
    sample: Callable[[], Any]
    valid: st.SearchStrategy[Any]
    max_size: int
    length_at: int | None  # offset of its u32 length prefix (purpose / update), if any


KINDS = [
    Kind(WorkReceipt, ReceiptError, "receipt.bin", sample_receipt, receipts,
         receipt_mod.MAX_SIZE, None),
    Kind(Spend, SpendError, "spend.bin", sample_spend, spends, spend_mod.MAX_SIZE,
         1 + 16 + 32 + 8 + 8),
    Kind(SignedEdit, EditError, "edit.bin", sample_edit, edits, edit_mod.MAX_SIZE,
         1 + 32 + 4 + 4),
]
by_kind = pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.cls.__name__)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parse_or_error(kind: Kind, data: Any) -> Any:
    """The parsed entry, or None if parsing raised the kind's own error (anything else fails)."""
    try:
        return kind.cls.parse(data)
    except kind.error as exc:
        assert str(exc)  # one clear message, never an empty one
        return None


# -- golden files ------------------------------------------------------------------------

@by_kind
def test_golden_file_is_stable(kind: Kind) -> None:
    """Ed25519 signatures are deterministic: the same fields give these bytes forever.

    A change here makes every stored ledger entry or city edit unreadable: bump the
    entry's VERSION and signing context rather than edit the golden file.
    """
    entry = kind.sample()
    golden = (GOLDEN / kind.golden).read_bytes()
    assert bytes(entry) == golden
    back = kind.cls.parse(golden)
    assert back == entry
    back.verify()


def test_golden_receipt_has_every_field_where_documented() -> None:
    raw = (GOLDEN / "receipt.bin").read_bytes()
    assert len(raw) == receipt_mod.MAX_SIZE  # both sensors present: the longest receipt
    assert raw[0] == receipt_mod.VERSION
    assert raw[74:78] == (77).to_bytes(4, "little")  # tokens
    assert raw[-64:] == sample_receipt().signature


# -- round trips -------------------------------------------------------------------------

@by_kind
@FUZZ
@given(data=st.data())
def test_signed_entries_round_trip_exactly(kind: Kind, data: st.DataObject) -> None:
    entry = data.draw(kind.valid)
    raw = bytes(entry)
    assert len(raw) <= kind.max_size
    back = kind.cls.parse(raw)
    assert back == entry
    assert bytes(back) == raw  # canonical: one encoding per entry
    back.verify()
    # The signature covers the body only: a signer's many valid signatures of one entry
    # all name the same body (the ledger counts receipts by it).
    assert back.body() == entry.body()


@by_kind
def test_unsigned_entries_have_no_bytes(kind: Kind) -> None:
    unsigned = replace(kind.sample(), signature=b"")
    with pytest.raises(kind.error, match="not signed"):
        bytes(unsigned)


# -- fuzzing: only the documented error, whatever the bytes -------------------------------

@by_kind
@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400))
def test_any_bytes_give_an_entry_or_its_error(kind: Kind, data: bytes) -> None:
    entry = parse_or_error(kind, data)
    if entry is not None:
        assert bytes(entry) == data


@by_kind
@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=400))
def test_any_body_after_the_version_gives_an_entry_or_its_error(kind: Kind, body: bytes) -> None:
    data = b"\x01" + body
    entry = parse_or_error(kind, data)
    if entry is not None:
        assert bytes(entry) == data


@by_kind
@FUZZ
@given(data=st.data())
def test_every_truncation_is_refused(kind: Kind, data: st.DataObject) -> None:
    raw = bytes(data.draw(kind.valid))
    cut = data.draw(st.integers(0, len(raw) - 1))
    assert parse_or_error(kind, raw[:cut]) is None


@by_kind
@FUZZ
@given(data=st.data())
def test_a_flipped_bit_is_refused_or_fails_verification(kind: Kind, data: st.DataObject) -> None:
    """A noisy link (or a careless peer) changes one bit: never accepted as signed."""
    entry = data.draw(kind.valid)
    raw = bytearray(bytes(entry))
    bit = data.draw(st.integers(0, 8 * len(raw) - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    mutated = parse_or_error(kind, bytes(raw))
    if mutated is not None:
        assert mutated != entry
        with pytest.raises(kind.error):
            mutated.verify()


@by_kind
@FUZZ
@given(data=st.data())
def test_spliced_bytes_give_an_entry_or_its_error(kind: Kind, data: st.DataObject) -> None:
    """Bytes inserted, deleted or overwritten anywhere (misframed relays, bad rows)."""
    raw = bytearray(bytes(data.draw(kind.valid)))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw)))
        op = data.draw(st.sampled_from(["insert", "delete", "overwrite"]))
        chunk = data.draw(st.binary(min_size=1, max_size=8))
        if op == "insert":
            raw[pos:pos] = chunk
        elif op == "delete":
            del raw[pos:pos + len(chunk)]
        else:
            raw[pos:pos + len(chunk)] = chunk
    entry = parse_or_error(kind, bytes(raw))
    if entry is not None:
        assert bytes(entry) == bytes(raw)


@pytest.mark.parametrize("kind", [k for k in KINDS if k.length_at is not None],
                         ids=lambda k: k.cls.__name__)
@FUZZ
@given(data=st.data())
def test_length_lies_are_refused(kind: Kind, data: st.DataObject) -> None:
    """A careful liar claims a length its bytes do not hold, up to 4 GiB."""
    assert kind.length_at is not None
    entry = data.draw(kind.valid)
    raw = bytearray(bytes(entry))
    true_len = int.from_bytes(raw[kind.length_at:kind.length_at + 4], "little")
    lie = data.draw(st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([2**32 - 1, 2**31]),
                              st.integers(max(0, true_len - 3), true_len + 3))
                    .filter(lambda n: n != true_len))
    raw[kind.length_at:kind.length_at + 4] = lie.to_bytes(4, "little")
    assert parse_or_error(kind, bytes(raw)) is None


@by_kind
def test_huge_lengths_and_oversized_input_are_refused_before_reading(kind: Kind) -> None:
    raw = bytes(kind.sample())
    with pytest.raises(kind.error, match=f"exceeds the limit of {kind.max_size - 1}"):
        kind.cls.parse(raw + bytes(kind.max_size))
    if kind.length_at is not None:
        lie = raw[:kind.length_at] + b"\xff\xff\xff\xff" + raw[kind.length_at + 4:]
        with pytest.raises(kind.error, match="4294967295 bytes exceeds the limit"):
            kind.cls.parse(lie)


@by_kind
@pytest.mark.parametrize("data", ["text", 5, None, [1, 2], 3.5])
def test_non_bytes_are_refused(kind: Kind, data: Any) -> None:
    # bytes(5) would be five zero bytes: a number must not pass for an entry.
    with pytest.raises(kind.error, match="must be bytes"):
        kind.cls.parse(data)


@by_kind
def test_errors_are_value_errors(kind: Kind) -> None:
    assert issubclass(kind.error, ValueError)
    assert kind.cls.parse(bytearray(bytes(kind.sample()))) == kind.sample()
    assert kind.cls.parse(memoryview(bytes(kind.sample()))) == kind.sample()

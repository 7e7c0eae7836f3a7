"""The cascade's wire messages: exact golden bytes, signed routes, and refusal of bad frames."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from hive_core.base.identity import Identity
from hive_core.base.stage import Part
from hive_core.exec.cascade_node import CascadeRefused, check_route, sign_route
from hive_core.protocol import ProtocolError, decode, encode
from hive_core.protocol.inference import (
    MAX_CASCADE_REPLICAS,
    MAX_ROUTE,
    CascadeHop,
    CascadeResult,
    CascadeRoute,
    KvKind,
    RunCascade,
    RunStage,
)
from hive_core.protocol.messages import ErrorCode
from hive_core.protocol.tensor import Dtype

GOLDEN = Path(__file__).parent / "golden"
ASKER = Identity.from_seed(bytes(range(32)))
KEYS = [Identity.from_seed(bytes([k]) * 32).public_key for k in range(1, 4)]


def route(**kw: object) -> CascadeRoute:
    fields: dict[str, object] = {
        "asker_key": ASKER.public_key, "session_id": b"s" * 16, "step": 7, "position": 11,
        "tokens": 1, "kv": KvKind.FP32, "attest": True, "wire": Dtype.BF16,
        "hops": (CascadeHop(1, 8, Part.FULL, (KEYS[0], KEYS[1])),
                 CascadeHop(8, 15, Part.FULL, (KEYS[2],))),
        "signature": bytes(64)}
    fields.update(kw)
    return sign_route(ASKER, CascadeRoute(**fields))  # type: ignore[arg-type]


def test_run_cascade_matches_golden_file() -> None:
    msg = RunCascade(route(), 1, b"\x01\x02sealed")
    golden = (GOLDEN / "run_cascade.bin").read_bytes()
    assert encode(msg) == golden
    assert decode(golden) == msg
    check_route(decode(golden).route)  # the signature survives the round trip


def test_cascade_result_round_trips() -> None:
    msg = CascadeResult(b"s" * 16, 7, 1, ErrorCode.REPLAYED, "hop 1 of step 7 was served already",
                        0, 0.0, None, b"")
    assert decode(encode(msg)) == msg and not msg.ok


def test_a_changed_route_no_longer_verifies() -> None:
    good = route()
    check_route(good)
    for bad in (replace(good, step=8), replace(good, hops=good.hops[:1]),
                replace(good, wire=Dtype.F32), replace(good, signature=bytes(64))):
        with pytest.raises(CascadeRefused, match="^the cascade route is not signed by its asker$"):
            check_route(bad)
    with pytest.raises(ValueError, match="signed by the asker it names"):
        sign_route(Identity.from_seed(bytes(32)), good)


def test_bad_routes_and_hops_are_refused_with_exact_messages() -> None:
    with pytest.raises(ProtocolError, match=r"^hop 2 of a 2-hop route$"):
        RunCascade(route(), 2, b"")
    with pytest.raises(ProtocolError, match=r"^a cascade hop lists a node twice$"):
        CascadeHop(0, 1, Part.FULL, (KEYS[0], KEYS[0]))
    with pytest.raises(ProtocolError, match=r"^a cascade hop needs at least one node$"):
        CascadeHop(0, 1, Part.FULL, ())
    with pytest.raises(ProtocolError, match=r"^empty layer range 3..3$"):
        CascadeHop(3, 3, Part.FULL, (KEYS[0],))
    with pytest.raises(ProtocolError, match=r"^hidden states travel as F32, F16 or BF16, not I8$"):
        route(wire=Dtype.I8)
    with pytest.raises(ProtocolError, match=r"^a cascade route needs at least one hop$"):
        route(hops=())
    hop = CascadeHop(0, 1, Part.FULL, tuple(KEYS[:1]))
    with pytest.raises(ProtocolError, match=f"items exceeds the limit of {MAX_ROUTE}$"):
        encode(RunCascade(replace(route(), hops=(hop,) * (MAX_ROUTE + 1)), 0, b""))
    keys = tuple(Identity.from_seed(bytes([k]) * 32).public_key for k in range(9, 14))
    assert len(keys) > MAX_CASCADE_REPLICAS
    with pytest.raises(ProtocolError, match=f"items exceeds the limit of {MAX_CASCADE_REPLICAS}$"):
        encode(RunCascade(replace(route(), hops=(CascadeHop(0, 1, Part.FULL, keys),)), 0, b""))


def test_a_frame_whose_index_runs_past_its_route_is_refused() -> None:
    frame = bytearray(encode(RunCascade(route(), 1, b"")))
    index_at = len(frame) - 4 - 1  # the index byte sits before the payload's 4-byte length
    assert frame[index_at] == 1
    frame[index_at] = 5
    with pytest.raises(ProtocolError, match=r"hop 5 of a 2-hop route"):
        decode(bytes(frame))


def test_run_stage_carries_its_wire_dtype() -> None:
    msg = RunStage(1, b"s" * 16, 0, 0, 2, Part.FULL, 0, 1, KvKind.FP32, True, b"x", Dtype.F16)
    assert decode(encode(msg)).wire is Dtype.F16
    with pytest.raises(ProtocolError, match=r"not F64$"):
        replace(msg, wire=Dtype.F64)

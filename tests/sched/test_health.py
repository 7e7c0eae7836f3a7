"""Health Vector: measurement from psutil/torch/peer table, record round trips, garbage refused."""

from __future__ import annotations

import dataclasses

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hive_core.base.health import MAX_PEERS, RECORD_FORMAT, HealthRecord, HealthVector, PeerRtt
from hive_core.mesh.peers import PeerInfo
from hive_core.protocol import ProtocolError
from hive_core.sched.health import benchmark_tflops, measure_health, peer_rtts, read_power


def vector(**over: object) -> HealthVector:
    base: dict[str, object] = {
        "tflops": 0.5, "battery_pct": 80.0, "on_ac": False,
        "peers": (PeerRtt(b"\x01" * 20, 12.5), PeerRtt(b"\x02" * 20, 40.0)),
        "uptime_s": 3600.0, "success_rate": 0.97, "free_ram_mb": 2048.0, "temperature_c": 55.0,
        "measured_at_ms": 1_700_000_000_000,
    }
    base.update(over)
    return HealthVector(**base)  # type: ignore[arg-type]


def info(node: int, rtt: float | None, pings: int, pongs: int) -> PeerInfo:
    return PeerInfo(node_id=bytes([node]) * 20, public_key=bytes(32), kind="rtc", listen="",
                    rtt_ms=rtt, connected_s=10.0, idle_s=0.1, frames_in=pongs,
                    frames_rejected=0, pings=pings, pongs=pongs)


def test_record_round_trip_is_exact_and_compact() -> None:
    h = vector()
    raw = h.to_record()
    assert raw[0] == RECORD_FORMAT
    assert HealthVector.from_record(raw) == h
    assert len(raw) < 200
    assert HealthVector.from_record(vector(battery_pct=None, on_ac=True, temperature_c=None,
                                           peers=()).to_record()).battery_pct is None


def test_full_record_fits_a_dht_value() -> None:
    peers = tuple(PeerRtt(i.to_bytes(20, "big"), float(i)) for i in range(MAX_PEERS))
    raw = vector(peers=peers).to_record()
    assert HealthVector.from_record(raw).peers == peers
    assert len(raw) < 8 * 1024


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty health record"),
        (b"\x07" + vector().to_record()[1:], "unknown health record format 7"),
        (vector().to_record()[:-3], "truncated"),
        (vector().to_record() + b"\x00", "trailing bytes"),
    ],
)
def test_malformed_records_raise_protocol_error(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        HealthVector.from_record(data)


def test_out_of_range_values_on_the_wire_are_refused() -> None:
    raw = bytearray(vector().to_record())
    # success_rate sits after tflops(8) battery(1+8) on_ac(1) peers(2 + 2*28) uptime(8)
    off = 1 + 8 + 9 + 1 + 2 + 2 * 28 + 8
    import struct

    raw[off : off + 8] = struct.pack("<d", 1.5)
    with pytest.raises(ProtocolError, match="success_rate"):
        HealthVector.from_record(bytes(raw))


def test_non_bytes_record_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="must be bytes"):
        HealthVector.from_record("hello")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "over",
    [
        {"tflops": -1.0}, {"battery_pct": 101.0}, {"success_rate": float("nan")},
        {"battery_pct": None, "on_ac": False}, {"free_ram_mb": -5.0},
        {"peers": (PeerRtt(b"\x01" * 20, 1.0), PeerRtt(b"\x01" * 20, 2.0))},
    ],
)
def test_constructor_validates(over: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        vector(**over)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_give_a_vector_or_protocol_error(data: bytes) -> None:
    try:
        h = HealthVector.from_record(data)
    except ProtocolError:
        return
    assert HealthVector.from_record(h.to_record()) == h


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=120))
def test_mutated_records_never_raise_anything_else(noise: bytes) -> None:
    raw = bytearray(vector().to_record())
    for i, b in enumerate(noise):
        raw[(i * 7 + b) % len(raw)] ^= b
    try:
        HealthVector.from_record(bytes(raw))
    except ProtocolError:
        pass


def test_measure_uses_peer_table_ewma_and_pong_rate() -> None:
    peers = [info(1, 30.0, 10, 9), info(2, None, 4, 0), info(3, 10.0, 6, 6)]
    h = measure_health(peers, uptime_s=12.0, tflops=0.25, now_ms=5)
    # unanswered peer 2 has no RTT; the list is nearest first
    assert [(p.node_id[0], p.rtt_ms) for p in h.peers] == [(3, 10.0), (1, 30.0)]
    assert h.success_rate == pytest.approx(15 / 20)
    assert h.uptime_s == 12.0 and h.tflops == 0.25 and h.measured_at_ms == 5
    assert h.rtt_median_ms == 20.0 and h.rtt_to(bytes([3]) * 20) == 10.0


def test_measure_reads_this_machine() -> None:
    h = measure_health({}, uptime_s=0.0, successes=3, attempts=4, tflops=1.0)
    battery, on_ac = read_power()
    assert (h.battery_pct is None) == (psutil.sensors_battery() is None)
    assert h.on_ac == on_ac and h.battery_pct == battery
    assert 0 < h.free_ram_mb <= psutil.virtual_memory().total / 2**20
    assert h.success_rate == 0.75
    if h.temperature_c is not None:
        assert -60 <= h.temperature_c <= 250


def test_peer_rtts_keeps_nearest_and_dedupes() -> None:
    many = {i.to_bytes(20, "big"): float(200 - i) for i in range(MAX_PEERS + 10)}
    kept = peer_rtts(many)
    assert len(kept) == MAX_PEERS
    assert kept[0].rtt_ms == min(many.values())
    assert max(p.rtt_ms for p in kept) == sorted(many.values())[MAX_PEERS - 1]


def test_benchmark_measures_positive_throughput() -> None:
    tf = benchmark_tflops(seconds=0.05, size=128)
    assert 0 < tf < 1e5
    with pytest.raises(ValueError):
        benchmark_tflops(seconds=0.0)


def test_the_tflops_benchmark_runs_on_a_thread_that_ends_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A live thread that ran torch's parallel ops would slow the shard's compute thread (two
    OpenMP teams): the benchmark's thread must be neither the caller nor alive afterwards."""
    import threading

    from hive_core.sched import health

    seen: list[threading.Thread] = []

    def fake(seconds: float = 0.25) -> float:
        seen.append(threading.current_thread())
        return 1.5

    monkeypatch.setattr(health, "benchmark_tflops", fake)
    monkeypatch.setattr(health, "_tflops_cache", None)
    assert health.measured_tflops() == 1.5
    assert health.measured_tflops() == 1.5  # cached: run once
    assert len(seen) == 1 and seen[0] is not threading.current_thread() and not seen[0].is_alive()

    def broken(seconds: float = 0.25) -> float:
        raise RuntimeError("no BLAS")

    monkeypatch.setattr(health, "benchmark_tflops", broken)
    monkeypatch.setattr(health, "_tflops_cache", None)
    with pytest.raises(RuntimeError, match="no BLAS"):
        health.measured_tflops()


def test_dht_summary_round_trip() -> None:
    h = vector()
    rec = h.to_health_record()
    assert isinstance(rec, HealthRecord)
    assert rec.rtt_median_ms == pytest.approx(26.25)
    back = HealthVector.from_health_record(rec)
    assert back.rtt_median_ms == rec.rtt_median_ms
    assert dataclasses.replace(back, peers=h.peers) == h
    assert h.as_dict()["rtt_ms"] == {"01" * 20: 12.5, "02" * 20: 40.0}

"""The Health Vector: what a node reports about itself (compute, power, links, uptime, heat).

`HealthVector` is the full record a node measures (`hive_core.sched.health` measures it);
`HealthRecord` is its summary as published in the DHT (per-peer RTTs folded into a median).
Every field is checked on construction; `HealthVector.from_record` raises `ProtocolError`
(a ValueError) on anything malformed and nothing else.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Annotated, Any

from hive_core.base.codec import Nested, decode_struct, encode_struct, wire_struct
from hive_core.base.errors import ProtocolError
from hive_core.base.fields import Bool, Fixed, Float, ListOf, Maybe, UInt
from hive_core.base.ids import ID_BYTES

RECORD_FORMAT = 1  # first byte of to_record(); bump when the struct changes
MAX_PEERS = 64  # per-peer RTTs kept in one record: the closest by RTT
MAX_RECORD_BYTES = 1 + 64 + MAX_PEERS * (ID_BYTES + 8) + 2  # well under the DHT's 8 KiB values
MAX_TFLOPS = 1.0e5  # sanity bound: a 2026 accelerator is ~1e3
MAX_RTT_MS = 600_000.0
MAX_TEMPERATURE_C = 250.0

F64 = Annotated[float, Float()]
OptF64 = Annotated[float | None, Maybe(Float())]


@wire_struct
@dataclass(frozen=True)
class HealthRecord:
    """A node's Health Vector as published (see `hive_core.sched.health`)."""

    tflops: F64  # measured matmul throughput
    battery_pct: OptF64  # None on a machine without a battery
    on_ac: Annotated[bool, Bool()]
    rtt_median_ms: OptF64  # median EWMA RTT over its peers, None before any ping
    uptime_s: F64
    success_rate: F64  # share of requests served successfully, 0..1
    free_ram_mb: F64
    temperature_c: OptF64  # hottest readable sensor, None where unreadable
    measured_at_ms: Annotated[int, UInt(8)]


@wire_struct
@dataclass(frozen=True)
class PeerRtt:
    """Round trip to one peer, as the EWMA of its pings."""

    node_id: Annotated[bytes, Fixed(ID_BYTES)]  # the peer's proven id
    rtt_ms: F64  # EWMA of ping round trips, milliseconds

    def __post_init__(self) -> None:
        if not 0.0 <= self.rtt_ms <= MAX_RTT_MS:
            raise ValueError(f"rtt {self.rtt_ms} ms is outside [0, {MAX_RTT_MS}]")


@wire_struct
@dataclass(frozen=True)
class HealthVector:
    """One node's health at `measured_at_ms`; every field is checked on construction."""

    tflops: F64  # float32 matmul throughput measured at start, TFLOP/s
    battery_pct: OptF64  # 0..100, None on a machine without a battery
    on_ac: Annotated[bool, Bool()]  # plugged in (always True without a battery)
    peers: Annotated[tuple[PeerRtt, ...], ListOf(Nested(PeerRtt), MAX_PEERS)]  # per-peer RTT
    uptime_s: F64  # seconds since the node started
    success_rate: F64  # share of requests answered, 0..1 (pongs / pings, tasks done / taken)
    free_ram_mb: F64  # available memory, MiB
    temperature_c: OptF64  # hottest readable sensor, None where unreadable
    measured_at_ms: Annotated[int, UInt(8)]  # unix milliseconds

    def __post_init__(self) -> None:
        _check_range("tflops", self.tflops, 0.0, MAX_TFLOPS)
        if self.battery_pct is not None:
            _check_range("battery_pct", self.battery_pct, 0.0, 100.0)
        if self.battery_pct is None and not self.on_ac:
            raise ValueError("a node without a battery must report AC power")
        _check_range("uptime_s", self.uptime_s, 0.0, 1.0e10)
        _check_range("success_rate", self.success_rate, 0.0, 1.0)
        _check_range("free_ram_mb", self.free_ram_mb, 0.0, 1.0e9)
        if self.temperature_c is not None:
            _check_range("temperature_c", self.temperature_c, -60.0, MAX_TEMPERATURE_C)
        ids = [p.node_id for p in self.peers]
        if len(set(ids)) != len(ids):
            raise ValueError("a peer appears twice in the RTT list")

    # -- derived views -------------------------------------------------------------------

    @property
    def rtt_median_ms(self) -> float | None:
        """Median of the per-peer RTTs, None before any ping was answered."""
        return statistics.median(p.rtt_ms for p in self.peers) if self.peers else None

    def rtt_to(self, node_id: bytes) -> float | None:
        """RTT to one peer, if measured."""
        for p in self.peers:
            if p.node_id == node_id:
                return p.rtt_ms
        return None

    # -- wire forms ----------------------------------------------------------------------

    def to_record(self) -> bytes:
        """Compact bytes for a signed DHT record: format byte + codec struct body."""
        return bytes((RECORD_FORMAT,)) + encode_struct(self)

    @classmethod
    def from_record(cls, data: bytes | bytearray | memoryview) -> HealthVector:
        """Inverse of `to_record`; ProtocolError on garbage, truncation or bad values."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ProtocolError(f"health record must be bytes, got {type(data).__name__}")
        data = bytes(data)
        if not data:
            raise ProtocolError("empty health record")
        if data[0] != RECORD_FORMAT:
            raise ProtocolError(f"unknown health record format {data[0]} (expected {RECORD_FORMAT})")
        return decode_struct(data[1:], cls, max_bytes=MAX_RECORD_BYTES)

    def to_health_record(self) -> HealthRecord:
        """The DHT's summary value (`RecordKind.HEALTH`): per-peer RTTs folded into a median."""
        return HealthRecord(
            tflops=self.tflops, battery_pct=self.battery_pct, on_ac=self.on_ac,
            rtt_median_ms=self.rtt_median_ms, uptime_s=self.uptime_s,
            success_rate=self.success_rate, free_ram_mb=self.free_ram_mb,
            temperature_c=self.temperature_c, measured_at_ms=self.measured_at_ms,
        )

    @classmethod
    def from_health_record(cls, rec: HealthRecord) -> HealthVector:
        """A vector from the DHT summary; its median RTT stands in as one anonymous peer."""
        peers = () if rec.rtt_median_ms is None else (PeerRtt(bytes(ID_BYTES), rec.rtt_median_ms),)
        return cls(
            tflops=rec.tflops, battery_pct=rec.battery_pct, on_ac=rec.on_ac, peers=peers,
            uptime_s=rec.uptime_s, success_rate=rec.success_rate, free_ram_mb=rec.free_ram_mb,
            temperature_c=rec.temperature_c, measured_at_ms=rec.measured_at_ms,
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (for `cadencia hive status --json`)."""
        return {
            "tflops": self.tflops, "battery_pct": self.battery_pct, "on_ac": self.on_ac,
            "rtt_ms": {p.node_id.hex(): p.rtt_ms for p in self.peers},
            "rtt_median_ms": self.rtt_median_ms, "uptime_s": self.uptime_s,
            "success_rate": self.success_rate, "free_ram_mb": self.free_ram_mb,
            "temperature_c": self.temperature_c, "measured_at_ms": self.measured_at_ms,
        }


def _check_range(name: str, value: float, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not (math.isfinite(value) and lo <= value <= hi):
        raise ValueError(f"{name} = {value!r} is outside [{lo}, {hi}]")

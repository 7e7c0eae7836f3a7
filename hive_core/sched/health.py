"""The Health Vector: what a node measures about itself, and its compact signed-record form.

`measure_health` gathers it: TFLOPS from a short torch matmul benchmark (run once per
process, at start), battery and AC power from psutil (no battery means a desktop on AC),
per-peer RTT as the EWMA that `hive_core.mesh.peers.Link` already keeps, stability as
uptime plus request success rate, free RAM, and the hottest readable temperature sensor.

`HealthVector.to_record()` / `from_record()` are the bytes published in the DHT (a format
byte, then the project codec's struct body); `from_record` raises `ProtocolError` (a
ValueError) on anything malformed and nothing else.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import psutil

from hive_core.mesh.dht.records import HealthRecord
from hive_core.protocol import (
    ID_BYTES,
    Bool,
    Fixed,
    Float,
    ListOf,
    Maybe,
    Nested,
    ProtocolError,
    UInt,
    decode_struct,
    encode_struct,
    wire_struct,
)

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


# -- measurement ---------------------------------------------------------------------------

_tflops_lock = threading.Lock()
_tflops_cache: float | None = None


def benchmark_tflops(seconds: float = 0.25, size: int = 512) -> float:
    """float32 matmul throughput of this device (TFLOP/s), best of repeated timed runs.

    Uses torch's current thread count, which is what shard servers will compute with.
    """
    import torch  # imported here: the health record must stay usable without torch loaded

    if seconds <= 0 or size < 16:
        raise ValueError("benchmark needs seconds > 0 and size >= 16")
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen)
    b = torch.randn(size, size, generator=gen)
    flops = 2.0 * size**3
    best = math.inf
    with torch.inference_mode():
        torch.mm(a, b)  # warm-up: allocator, kernel selection
        deadline = time.perf_counter() + seconds
        runs = 0
        while runs < 3 or time.perf_counter() < deadline:
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t0)
            runs += 1
    return min(flops / max(best, 1e-9) / 1e12, MAX_TFLOPS)


def measured_tflops(seconds: float = 0.25) -> float:
    """The benchmark result for this process, run once (at start) and then cached.

    It runs on a thread of its own that ends with it. A live thread that once ran torch's
    parallel ops keeps an OpenMP thread team; with two teams on the machine's cores, libgomp
    stops spinning between parallel regions, and the shard's compute thread (the one that
    should drive torch, see `hive_core.exec.client.load_local`) pays a thread wake-up in
    every region: a packed decode step ran at under half its speed on 2 cores.
    """
    global _tflops_cache
    with _tflops_lock:
        if _tflops_cache is None:
            _tflops_cache = _on_own_thread(lambda: benchmark_tflops(seconds))
        return _tflops_cache


def _on_own_thread(fn: Callable[[], float]) -> float:
    """`fn()` on a new thread, joined; its exception is raised here."""
    out: list[float] = []
    err: list[BaseException] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            err.append(e)

    t = threading.Thread(target=run, name="tflops-benchmark")
    t.start()
    t.join()
    if err:
        raise err[0]
    return out[0]


def read_power() -> tuple[float | None, bool]:
    """(battery %, on AC); a machine without a readable battery reports (None, True)."""
    try:
        batt = psutil.sensors_battery()
    except (AttributeError, NotImplementedError, OSError, RuntimeError):
        batt = None
    if batt is None:
        return None, True
    pct = min(100.0, max(0.0, float(batt.percent)))
    plugged = batt.power_plugged
    return pct, bool(plugged) if plugged is not None else False


def read_temperature() -> float | None:
    """The hottest current reading of any sensor psutil can read, else None."""
    reader = getattr(psutil, "sensors_temperatures", None)
    if reader is None:
        return None
    try:
        sensors = reader()
    except (NotImplementedError, OSError, RuntimeError):
        return None
    readings = [
        t.current for entries in sensors.values() for t in entries
        if t.current is not None and math.isfinite(t.current) and -60.0 <= t.current <= MAX_TEMPERATURE_C
    ]
    return max(readings) if readings else None


def peer_rtts(peers: Iterable[Any] | Mapping[bytes, float | None]) -> tuple[PeerRtt, ...]:
    """Per-peer RTTs from `PeerInfo`/`Link` objects (their EWMA) or an id -> ms mapping.

    Peers never answered are left out; above MAX_PEERS only the nearest are kept.
    """
    pairs: list[tuple[bytes, float | None]]
    if isinstance(peers, Mapping):
        pairs = list(peers.items())
    else:
        links: Iterable[Any] = peers
        pairs = [(p.node_id, p.rtt_ms) for p in links]
    best: dict[bytes, float] = {}
    for node_id, rtt in pairs:
        if rtt is None or not math.isfinite(rtt) or rtt < 0:
            continue
        rtt = min(float(rtt), MAX_RTT_MS)
        best[bytes(node_id)] = min(rtt, best.get(bytes(node_id), math.inf))
    ranked = sorted(best.items(), key=lambda kv: (kv[1], kv[0]))[:MAX_PEERS]
    return tuple(PeerRtt(nid, ms) for nid, ms in ranked)


def success_rate_of(peers: Iterable[Any], successes: int = 0, attempts: int = 0) -> float:
    """Answered share over explicit task counts plus the links' pongs/pings; 1.0 with no data."""
    ok, total = successes, attempts
    for p in peers:
        ok += min(getattr(p, "pongs", 0), getattr(p, "pings", 0))
        total += getattr(p, "pings", 0)
    if total <= 0:
        return 1.0
    return min(1.0, max(0.0, ok / total))


def measure_health(
    peers: Iterable[Any] | Mapping[bytes, float | None] = (),
    *,
    uptime_s: float,
    successes: int = 0,
    attempts: int = 0,
    tflops: float | None = None,
    now_ms: int | None = None,
) -> HealthVector:
    """This device's Health Vector now.

    `peers`: `PeerInfo`s from the node's peer table (RTT EWMA, pings/pongs) or an
    id -> RTT mapping; `successes`/`attempts`: tasks served; `tflops`: override the
    cached start-up benchmark (tests, simulator).
    """
    if isinstance(peers, Mapping):
        rtts = peer_rtts(peers)
        rate = success_rate_of((), successes, attempts)
    else:
        peer_list = list(peers)
        rtts = peer_rtts(peer_list)
        rate = success_rate_of(peer_list, successes, attempts)
    battery, on_ac = read_power()
    return HealthVector(
        tflops=measured_tflops() if tflops is None else float(tflops),
        battery_pct=battery,
        on_ac=on_ac,
        peers=rtts,
        uptime_s=max(0.0, float(uptime_s)),
        success_rate=rate,
        free_ram_mb=psutil.virtual_memory().available / 2**20,
        temperature_c=read_temperature(),
        measured_at_ms=int(time.time() * 1000) if now_ms is None else int(now_ms),
    )

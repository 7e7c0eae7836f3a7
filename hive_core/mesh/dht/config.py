"""DHT tuning knobs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DhtConfig:
    """Parameters of one DHT node; defaults follow Kademlia's paper where it gives one."""

    k: int = 20  # bucket size and replication factor
    alpha: int = 3  # parallel requests in flight per lookup
    rpc_timeout_s: float = 2.0  # a request unanswered for this long counts as failed
    max_failures: int = 1  # consecutive failures before a contact is evicted
    record_ttl_s: float = 600.0  # lifetime of our own records
    republish_s: float = 300.0  # re-sign and re-store our records this often (< ttl)
    refresh_s: float = 900.0  # look up a random id in buckets idle for this long
    pns_factor: float = 2.0  # a newcomer this many times faster replaces a bucket's slowest
    rtt_window: int = 2  # lookups pick among alpha + this many closest, fastest first
    unknown_rtt_s: float = 0.15  # RTT assumed for contacts never measured

    def __post_init__(self) -> None:
        if self.k < 1 or self.alpha < 1:
            raise ValueError("k and alpha must be at least 1")
        if not 0 < self.republish_s < self.record_ttl_s:
            raise ValueError("republish_s must be positive and below record_ttl_s")

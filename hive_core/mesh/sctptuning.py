"""Per-connection SCTP retransmission tuning for aiortc, where its defaults hurt on home links.

aiortc follows RFC 4960 literally: the retransmission timeout (RTO) never drops below
1 s and starts at 3 s. On a 20 ms link with 5 % loss, a lost message in a request/reply
exchange has no later packets to trigger fast retransmit, so it waits for the T3 timer:
the p99 round trip becomes about 1 s. Browsers' SCTP stacks use far lower minimums.

aiortc reads the bounds from module constants inside ``RTCSctpTransport._update_rto``;
changing the constants would affect every connection in the process, so instead the
tuned connections get their own ``_update_rto`` bound on the instance. This is the one
place that touches aiortc's private SCTP state (checked against aiortc 1.16).
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any


class TuningError(ValueError):
    """An SCTP tuning value is out of its sensible range."""


@dataclass(frozen=True)
class SctpTuning:
    """Retransmission timer bounds for one SCTP association (seconds)."""

    rto_min_s: float = 0.1  # floor of the retransmit timeout (aiortc: 1.0); RTT-driven above it
    rto_initial_s: float = 1.0  # timeout before the first RTT sample (aiortc: 3.0; RFC 6298: 1.0)
    rto_max_s: float = 10.0  # ceiling of the RTT-driven timeout (aiortc: 60.0)

    def __post_init__(self) -> None:
        if not 0.01 <= self.rto_min_s <= self.rto_initial_s <= self.rto_max_s <= 120.0:
            raise TuningError(
                "need 0.01 <= rto_min_s <= rto_initial_s <= rto_max_s <= 120, got "
                f"{self.rto_min_s}, {self.rto_initial_s}, {self.rto_max_s}"
            )


def _tuned_update_rto(self: Any, rtt: float, *, tuning: SctpTuning) -> None:
    """RFC 4960 section 6.3.1 smoothing, with this connection's bounds."""
    alpha, beta = 1 / 8, 1 / 4
    if self._srtt is None:
        self._rttvar = rtt / 2
        self._srtt = rtt
    else:
        self._rttvar = (1 - beta) * self._rttvar + beta * abs(self._srtt - rtt)
        self._srtt = (1 - alpha) * self._srtt + alpha * rtt
    self._rto = max(tuning.rto_min_s, min(self._srtt + 4 * self._rttvar, tuning.rto_max_s))


def apply_tuning(transport: Any, tuning: SctpTuning) -> None:
    """Give one aiortc ``RTCSctpTransport`` the timer bounds of ``tuning``.

    Call it before the association starts (before the DTLS handshake completes), so
    that the INIT retransmissions already use ``rto_initial_s``.
    """
    for attr in ("_srtt", "_rttvar", "_rto", "_update_rto"):
        if not hasattr(transport, attr):
            raise RuntimeError(f"aiortc SCTP transport has no {attr}: SCTP tuning needs aiortc 1.16")

    def update(self: Any, rtt: float) -> None:
        _tuned_update_rto(self, rtt, tuning=tuning)

    transport._update_rto = types.MethodType(update, transport)
    if transport._srtt is None:
        transport._rto = tuning.rto_initial_s
    transport._hive_tuning = tuning


def tuning_of(transport: Any) -> SctpTuning | None:
    """The tuning applied to ``transport``, or None when it runs aiortc's defaults."""
    return getattr(transport, "_hive_tuning", None)

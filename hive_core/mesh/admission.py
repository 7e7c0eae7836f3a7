"""Admission of WebSocket peers: separate budgets for handshakes and for authenticated links.

A listening node (a sentinel) must keep answering `hive status` and joins while strangers
flood it with connections that are slow (trickling their HTTP upgrade), silent (never
sending a Hello) or authenticated with fresh keys and then idle. Two budgets, as nginx and
coturn keep them:

- **handshakes** (TCP accept until a verified Hello): a rate per source address (a token
  bucket: beyond it a connection is answered HTTP 503 at once, which costs next to nothing),
  a short deadline, a cap per source address and a cap overall. When a cap is exceeded the *oldest* handshake past a short
  grace is dropped, not the newcomer: an honest client finishes its handshake in
  milliseconds, a flood's connections linger, so the flood evicts itself. Only when every
  handshake is younger than the grace is the newcomer turned away.
- **authenticated links**: one per key (a new link replaces the old), a total cap, a share
  of it reserved for keys this node knows (peers it had data channels with), and links idle
  (nothing but pings) closed after a while. When full, a link of the source address holding
  the most links is evicted: one that never sent anything since its Hello (the oldest
  first), else the one idle longest if idle long enough; when none qualifies, a few *brief* slots admit a newcomer for a few seconds
  (enough for a status call or a join's signaling); beyond those it is refused with
  OVERLOADED. Honest clients speak at once (a status request, a FindNode), so a flood of
  keys that say nothing makes room for them.

The policy here is pure (no I/O): `HandshakePool` and `decide` are used by
`hive_core.mesh.wschannel.WsServer` and `hive_core.mesh.hivenode.HiveNode`.
"""

from __future__ import annotations

import enum
from collections import Counter, OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol

MAX_SOURCES = 65_536  # source addresses whose rate is tracked (the least recent forgotten)


class AdmissionConfigError(ValueError):
    """An admission limit is out of range or inconsistent with another."""


@dataclass(frozen=True)
class AdmissionConfig:
    """Limits a listening node applies to WebSocket connections."""

    max_handshakes: int = 512  # connections accepted but not yet authenticated, all sources
    max_handshakes_per_source: int = 32  # of those, from one IP address
    handshake_s: float = 5.0  # TCP accept -> verified Hello and a first request, else dropped
    handshake_grace_s: float = 1.0  # a handshake younger than this is never dropped for room
    handshake_rate: float = 10.0  # new connections per second and source, in the long run
    handshake_burst: int = 32  # ... and at once (the token bucket's depth)
    max_links: int = 256  # authenticated WebSocket links, all lanes but BRIEF
    reserved_links: int = 64  # of max_links, kept for keys this node knows
    brief_links: int = 32  # over budget with nothing idle: slots that last brief_s only
    brief_s: float = 10.0  # lifetime of a BRIEF link (a status call, a join's signaling)
    idle_s: float = 60.0  # a link that sent nothing but pings for this long is closed
    evict_idle_s: float = 2.0  # a full budget evicts the link idle longest, if idle this long
    pre_auth_frame_bytes: int = 16 * 1024  # largest frame before the Hello is verified

    def __post_init__(self) -> None:
        if not 1 <= self.max_handshakes_per_source <= self.max_handshakes:
            raise AdmissionConfigError("need 1 <= max_handshakes_per_source <= max_handshakes")
        if not 0 <= self.reserved_links < self.max_links:
            raise AdmissionConfigError("need 0 <= reserved_links < max_links")
        if self.brief_links < 0:
            raise AdmissionConfigError("brief_links must be >= 0")
        if self.handshake_burst < 1:
            raise AdmissionConfigError("handshake_burst must be at least 1")
        for name in ("handshake_s", "handshake_grace_s", "handshake_rate", "brief_s", "idle_s",
                     "evict_idle_s"):
            if not getattr(self, name) > 0:
                raise AdmissionConfigError(f"{name} must be positive")
        if self.pre_auth_frame_bytes < 1024:
            raise AdmissionConfigError("pre_auth_frame_bytes must be at least 1024 (a Hello)")


class HandshakePool:
    """Connections between TCP accept and a verified Hello, oldest first.

    `add` returns the connections to drop so that the newcomer fits: if its source is at
    its cap, that source's oldest past the grace, else the newcomer itself. If the pool is
    full, the room comes from the source holding the most handshakes (fair share: a small
    source, an honest client among a botnet's hosts, is never crowded out by a big one
    however slow its handshake on a loaded machine): its oldest past the grace, else its
    newest; the newcomer's own source counts as the biggest when it ties, and then the
    newcomer itself goes when nothing of its source is past the grace.
    """

    def __init__(self, config: AdmissionConfig) -> None:
        self.config = config
        self._entries: OrderedDict[Hashable, tuple[str, float]] = OrderedDict()
        self._per_source: Counter[str] = Counter()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, when
        self.dropped = 0  # handshakes dropped to make room (newcomers turned away included)
        self.throttled = 0  # connections refused for their source's rate

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, conn: object) -> bool:
        return conn in self._entries

    def from_source(self, source: str) -> int:
        return self._per_source[source]

    def allow(self, source: str, now: float) -> bool:
        """Take a token from `source`'s bucket; False (counted) when it is empty."""
        rate, burst = self.config.handshake_rate, float(self.config.handshake_burst)
        tokens, then = self._buckets.pop(source, (burst, now))
        tokens = min(burst, tokens + (now - then) * rate)
        ok = tokens >= 1.0
        self._buckets[source] = (tokens - 1.0 if ok else tokens, now)
        while len(self._buckets) > MAX_SOURCES:
            self._buckets.popitem(last=False)
        if not ok:
            self.throttled += 1
        return ok

    def _oldest(self, now: float, source: str) -> Hashable | None:
        """`source`'s oldest handshake, if it is past the grace."""
        for conn, (src, since) in self._entries.items():
            if now - since < self.config.handshake_grace_s:
                return None  # oldest first: every later one is younger still
            if src == source:
                return conn
        return None

    def _from_biggest(self, conn: Hashable, source: str, now: float) -> Hashable:
        biggest, count = self._per_source.most_common(1)[0]
        if count <= self._per_source[source] + 1:  # the newcomer's source is (about) biggest
            return self._oldest(now, source) or conn
        return self._oldest(now, biggest) or next(
            c for c, (src, _) in reversed(self._entries.items()) if src == biggest)

    def add(self, conn: Hashable, source: str, now: float) -> list[Hashable]:
        victims: list[Hashable] = []
        if self._per_source[source] >= self.config.max_handshakes_per_source:
            victims.append(self._oldest(now, source) or conn)
        elif len(self._entries) >= self.config.max_handshakes:
            victims.append(self._from_biggest(conn, source, now))
        self.dropped += len(victims)
        for victim in victims:
            self.remove(victim)
        if conn not in victims:
            self._entries[conn] = (source, now)
            self._per_source[source] += 1
        return victims

    def remove(self, conn: Hashable) -> bool:
        """Forget `conn` (authenticated, closed or dropped); False if it was not here."""
        entry = self._entries.pop(conn, None)
        if entry is None:
            return False
        source = entry[0]
        self._per_source[source] -= 1
        if self._per_source[source] <= 0:
            del self._per_source[source]
        return True


class Lane(enum.Enum):
    """Which budget an authenticated WebSocket link counts against."""

    KNOWN = "known"  # a key this node had a data channel with: the reserved share
    GENERAL = "general"  # any other key
    BRIEF = "brief"  # admitted over budget, closed after brief_s


class Held(Protocol):
    """What `decide` needs to know of a link already admitted."""

    @property
    def lane(self) -> Lane: ...

    @property
    def since(self) -> float:
        """Monotonic time it was admitted."""
        ...

    @property
    def source(self) -> str:
        """The IP address it came from."""
        ...

    @property
    def last_active(self) -> float | None:
        """Monotonic time of its last frame other than a ping or pong; None: none yet."""
        ...


@dataclass(frozen=True)
class Admission:
    """`decide`'s answer: the lane of the newcomer and the link to close for it, if any."""

    lane: Lane
    evict: Held | None = None


def _idlest(links: Sequence[Held], now: float, min_idle_s: float) -> Held | None:
    """The link to evict: from the source holding the most links (a busy machine may take
    seconds to read an honest client's first request, and the flood's sources must not
    push it out meanwhile), one that never spoke (the oldest first), else the one idle
    longest past `min_idle_s`; None when no link may go."""
    held = Counter(lk.source for lk in links)
    candidates = [lk for lk in links
                  if lk.last_active is None or now - lk.last_active >= min_idle_s]
    if not candidates:
        return None
    return min(candidates, key=lambda lk: (-held[lk.source], lk.last_active is not None,
                                           lk.since if lk.last_active is None
                                           else lk.last_active))


def decide(config: AdmissionConfig, known: bool, held: Sequence[Held],
           now: float) -> Admission | str:
    """Admit a newly authenticated key into a lane (evicting the link idle longest if the
    budget is full), or return the reason it is refused."""
    general = [lk for lk in held if lk.lane is Lane.GENERAL]
    reserved = [lk for lk in held if lk.lane is Lane.KNOWN]
    brief = [lk for lk in held if lk.lane is Lane.BRIEF]
    total = len(general) + len(reserved)
    if known:
        if total < config.max_links:
            return Admission(Lane.KNOWN)
        victim = (_idlest(general, now, config.evict_idle_s)
                  or _idlest(reserved, now, config.evict_idle_s))
        if victim is not None:
            return Admission(Lane.KNOWN, victim)
    else:
        if len(general) < config.max_links - config.reserved_links and total < config.max_links:
            return Admission(Lane.GENERAL)
        victim = _idlest(general, now, config.evict_idle_s)
        if victim is not None:
            return Admission(Lane.GENERAL, victim)
    if len(brief) < config.brief_links:
        return Admission(Lane.BRIEF)
    return (f"{total + len(brief)} links open and none idle for "
            f"{config.evict_idle_s:g} s; try again later")

"""`hive status`: ask one node for the hive's signed records, verify them, shape them as JSON."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from hive_core.base.health import HealthRecord
from hive_core.base.identity import Identity
from hive_core.mesh.dht.records import (
    LinksRecord,
    RecordError,
    RolesRecord,
    ServingRecord,
    owner_of,
    verify_record,
)
from hive_core.mesh.node import Node, NodeConfig
from hive_core.mesh.wschannel import ws_connect
from hive_core.protocol import HandshakeError, SignedRecord, StatusReply, StatusRequest
from hive_core.sched.fitness import fitness_scores


class StatusFailed(ConnectionError):
    """The hive did not answer a status request (unreachable, refused, or no reply in time)."""


def main_role(roles: list[str]) -> str:
    """One word for a node's part: sentinel, alpha, beta, verifier, or auto (alpha and beta)."""
    if "sentinel" in roles:
        return "sentinel"
    if "alpha" in roles and "beta" in roles:
        return "auto"
    return roles[0] if roles else "unknown"


def status_view(records: Iterable[SignedRecord], now_s: float | None = None) -> dict[str, Any]:
    """``{"nodes": [{"id", "role", "roles", "health", "fitness", "layers", "weights",
    "model"}], "rtt_ms": {id: {id: ms}}, "rejected": n}`` from records whose signatures and
    expiry are checked here. `layers` are the [start, end) spans a node serves, `weights`
    the mode it holds them in (None: it serves none, or did not say)."""
    now = time.time() if now_s is None else now_s
    per_node: dict[str, dict[str, Any]] = {}
    rtt: dict[str, dict[str, float]] = {}
    rejected = 0
    for record in records:
        try:
            value = verify_record(record, now)
        except RecordError:
            rejected += 1
            continue
        owner = owner_of(record).hex()
        entry = per_node.setdefault(owner, {"id": owner, "role": "unknown", "roles": [],
                                            "health": None, "fitness": None, "layers": [],
                                            "weights": None, "model": None})
        if isinstance(value, HealthRecord):
            entry["health"] = _health_dict(value)
            entry["fitness"] = fitness_scores(value)
        elif isinstance(value, RolesRecord):
            entry["roles"] = [r.name.lower() for r in value.roles]
            entry["role"] = main_role(entry["roles"])
        elif isinstance(value, ServingRecord):
            entry["layers"] = [[span.start, span.end] for span in value.spans]
            entry["model"] = value.spans[0].model if value.spans else None
            modes = sorted({span.weights for span in value.spans if span.weights})
            entry["weights"] = ",".join(modes) or None
        elif isinstance(value, LinksRecord):
            rtt[owner] = {p.node_id.hex(): round(p.rtt_ms, 3) for p in value.peers}
    nodes = sorted(per_node.values(), key=lambda n: (n["role"] != "sentinel", n["id"]))
    return {"nodes": nodes, "rtt_ms": rtt, "rejected": rejected}


def _health_dict(h: HealthRecord) -> dict[str, Any]:
    return {
        "tflops": round(h.tflops, 6), "battery_pct": h.battery_pct, "on_ac": h.on_ac,
        "rtt_median_ms": None if h.rtt_median_ms is None else round(h.rtt_median_ms, 3),
        "uptime_s": round(h.uptime_s, 3), "success_rate": round(h.success_rate, 6),
        "free_ram_mb": round(h.free_ram_mb, 1), "temperature_c": h.temperature_c,
        "measured_at_ms": h.measured_at_ms,
    }


async def fetch_status(url: str, *, timeout_s: float = 10.0) -> dict[str, Any]:
    """Connect to the node at ``ws://HOST:PORT`` with a throwaway identity and ask it."""
    node = Node(Identity.generate(), NodeConfig(handshake_timeout_s=timeout_s,
                                                request_timeout_s=timeout_s))
    node.register_reply(StatusReply)
    try:
        channel = await ws_connect(url, timeout=timeout_s)
        link = await node.attach(channel, kind="ws", mode="second")
        reply = await node.request(link.node_id, StatusRequest(node.next_rpc_id()))
    except (ConnectionError, HandshakeError) as exc:
        said = str(exc) if url in str(exc) else f"{url}: {exc}"  # the URL once
        raise StatusFailed(f"{said} (is a sentinel or a node with --listen running there? "
                           "'cadencia hive up' starts a hive on this machine)") from None
    finally:
        await node.close()
    if not isinstance(reply, StatusReply):
        raise StatusFailed(f"{url}: answered {type(reply).__name__}, not a status reply")
    view = status_view(reply.records)
    view["hive"] = url
    return view

"""What one OPC UA collector reports: ``OpcuaHealth``, and its part of ``/health``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["OpcuaHealth", "health_report"]


@dataclass(frozen=True, slots=True)
class OpcuaHealth:
    endpoint: str
    connected: bool  # a session with its subscriptions is up
    since_ms: int | None  # when ``connected`` last changed (None: never tried yet)
    down_since_ms: int | None  # since when the endpoint is unreachable (None while up)
    last_error: str | None
    reconnects: int  # sessions established after the first
    machines: list[str]
    monitored_items: int  # live data items (heartbeats not counted)
    missing_nodes: list[str]  # "machine.signal node_id: why", retried while connected
    bad_values: int  # notifications with a Bad status
    uncertain_values: int
    notifications: int  # data-change notifications received (heartbeats included)
    heartbeats: int
    last_heartbeat_ms: int | None
    rejected: dict[str, int] = field(default_factory=dict)


def health_report(o: OpcuaHealth, now_ms: int) -> dict[str, Any]:
    """The collector's part of the gateway's ``/health``: healthy, and if not, why."""
    why = None
    if not o.connected:
        down_s = None if o.down_since_ms is None else (now_ms - o.down_since_ms) // 1000
        since = "" if down_s is None else f" for {down_s} s"
        why = f"{o.endpoint} unreachable{since}: {o.last_error or 'connecting'}"
    elif o.missing_nodes:
        why = f"{len(o.missing_nodes)} node(s) missing: {'; '.join(o.missing_nodes[:5])}"
    return {
        "healthy": why is None,
        "why": why,
        "connected": o.connected,
        "since_ms": o.since_ms,
        "down_since_ms": o.down_since_ms,
        "reconnects": o.reconnects,
        "machines": o.machines,
        "monitored_items": o.monitored_items,
        "missing_nodes": o.missing_nodes,
        "bad_values": o.bad_values,
        "notifications": o.notifications,
        "last_heartbeat_ms": o.last_heartbeat_ms,
        "heartbeat_silent_for_s": None
        if o.last_heartbeat_ms is None
        else round((now_ms - o.last_heartbeat_ms) / 1000, 1),
    }

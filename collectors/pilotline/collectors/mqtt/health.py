"""What the MQTT collector reports: ``MqttHealth``, and its part of ``/health``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["MqttHealth", "health_report"]


@dataclass(frozen=True, slots=True)
class MqttHealth:
    connected: bool
    since_ms: int | None  # when ``connected`` last changed (None: never tried yet)
    last_error: str | None
    reconnects: int  # successful connections after the first
    subscribed: bool  # every topic granted on the current connection
    topics: dict[str, int | None]  # topic -> arrival time of its last message
    received: int
    rejected: dict[str, int]
    unacked: int = 0  # QoS 1 messages handed out and not yet acknowledged on this connection
    dropped_acks: int = 0  # tokens of an earlier connection, or acknowledged twice
    pauses: int = 0  # times reading stopped because receive_maximum messages were unacked
    session_present: bool = False  # the broker resumed our session (and its subscriptions)
    contested: str | None = None  # why another client is taking our session over (contest.py)
    contested_since_ms: int | None = None
    signals_dropped: dict[str, int] | None = None  # machine -> keys beyond max_signals


def health_report(h: MqttHealth, now_ms: int) -> dict[str, Any]:
    """The collector's part of the gateway's ``/health``: healthy, and if not, why."""
    why = None
    if h.contested is not None:
        why = f"session taken over by another client: {h.contested}"
    elif not h.connected:
        why = f"disconnected: {h.last_error or 'connecting'}"
    elif not h.subscribed and not h.session_present:
        # A resumed session keeps its subscriptions: the broker delivers the backlog it
        # queued before it answers the new SUBSCRIBE, which may take a while and is not
        # a fault.
        why = "subscriptions not confirmed by the broker"
    return {
        "healthy": why is None,
        "why": why,
        "connected": h.connected,
        "session_resumed": h.session_present,
        "contested_since_ms": h.contested_since_ms,
        "subscribed": h.subscribed,
        "since_ms": h.since_ms,
        "reconnects": h.reconnects,
        "received": h.received,
        "unacked": h.unacked,
        "read_pauses": h.pauses,
        "rejected": dict(h.rejected),
        "signals_dropped": dict(h.signals_dropped or {}),
        "subscriptions": {
            topic: {
                "last_message_ms": last,
                "silent_for_s": None if last is None else round((now_ms - last) / 1000, 1),
            }
            for topic, last in h.topics.items()
        },
    }

"""What a channel is told: one grouped ``Notification`` as a JSON payload (the row stored in
the ``notifications`` table and the body of ``format: json`` webhooks and MQTT messages), and
the human text every channel derives from that payload (Slack lines, mail subject and body).

A row is the payload of one ``Notification`` for one channel::

    {"site": "marseille-pilot", "channel": "ops", "kind": "firing",
     "group": {"rule": "machine-down", "zone": "photonics"},
     "ts": "2026-11-27T00:02:00.000+00:00", "ts_ms": 1795737720000,
     "counts": {"firing": 3, "resolved": 0},
     "alerts": [{"rule": ..., "machine": ..., "zone": ..., "owner": ..., "severity": ...,
                 "status": "firing", "firing": true, "value": 120.0, "message": ...,
                 "ts": ..., "ts_ms": ..., "since": ..., "since_ms": ...}, ...]}

Rows written before notifications were grouped (one transition each: ``rule``, ``firing`` ...
at the top level; ``legacy_payload`` in tests/gateway/test_notify.py writes one) are read as a
notification of that one alert (``upgrade``), so a queue left by an older gateway is still
delivered.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

from pilotline.gateway.notify.booking import booking_lines, booking_title, is_booking
from pilotline.gateway.timefmt import iso
from pilotline.rules.alerts import AlertTransition
from pilotline.rules.dispatch import Notification

MAX_TEXT_ALERTS = 100
"""Alert lines in a text rendering (Slack, mail); the rest is summarised in one line. Chat
services refuse very long messages; the JSON payload always carries every alert."""


def _number(value: float) -> float | None:
    # Strict JSON has no NaN or infinity: receivers' parsers would refuse the whole body.
    return value if math.isfinite(value) else None


def alert_payload(t: AlertTransition) -> dict[str, Any]:
    """One alert of a notification: its latest transition."""
    return {
        "rule": t.rule,
        "machine": t.machine,
        "zone": t.zone,
        "owner": t.owner,
        "severity": t.severity,
        "status": "firing" if t.firing else "resolved",
        "firing": t.firing,
        "value": _number(t.value),
        "message": t.message,
        "ts": iso(t.ts_ms),
        "ts_ms": t.ts_ms,
        "since": iso(t.since_ms),
        "since_ms": t.since_ms,
    }


def notification_payload(site: str, n: Notification) -> dict[str, Any]:
    """The payload of one notification (see the module docstring)."""
    firing = sum(1 for a in n.alerts if a.firing)
    return {
        "site": site,
        "channel": n.channel,
        "kind": n.kind,
        "group": dict(n.group),
        "ts": iso(n.ts_ms),
        "ts_ms": n.ts_ms,
        "counts": {"firing": firing, "resolved": len(n.alerts) - firing},
        "alerts": [alert_payload(t) for t in n.alerts],
    }


def without_owners(p: dict[str, Any]) -> dict[str, Any]:
    """``p`` without owner names (each alert's ``owner``, an ``owner`` group label), for a
    channel whose readers must not learn whose machines these are (a non-private MQTT
    channel). ``p`` is left as it is."""
    return {
        **p,
        "group": {k: v for k, v in p["group"].items() if k != "owner"},
        "alerts": [{k: v for k, v in a.items() if k != "owner"} for a in p["alerts"]],
    }


def dumps(payload: dict[str, Any]) -> str:
    """Compact JSON with sorted keys: the same payload is always the same text."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, allow_nan=False)


def notification_json(site: str, n: Notification) -> str:
    return dumps(notification_payload(site, n))


def notification_rows(site: str, notifications: Iterable[Notification]) -> list[tuple[str, str]]:
    """``(channel, payload JSON)`` rows for ``Store.commit(notifications=...)``."""
    return [(n.channel, notification_json(site, n)) for n in notifications]


# --------------------------------------------------------------------------- text


def status_label(p: dict[str, Any]) -> str:
    """``FIRING:3`` while any alert of the notification fires, else ``RESOLVED``."""
    firing = int(p["counts"]["firing"])
    return f"FIRING:{firing}" if firing else "RESOLVED"


def group_label(p: dict[str, Any]) -> str:
    """The group's label values, as Alertmanager titles them (``machine-down photonics``)."""
    values = [str(v) for v in p["group"].values()]
    return " ".join(values) if values else "all alerts"


def title(p: dict[str, Any]) -> str:
    """``[FIRING:3] machine-down photonics``; a reminder says so."""
    if is_booking(p):
        return booking_title(p)
    reminder = " (reminder)" if p["kind"] == "repeat" else ""
    return f"[{status_label(p)}] {group_label(p)}{reminder}"


def alert_line(a: dict[str, Any]) -> str:
    """``FIRING critical machine-down on laser-01 (photonics): <message> (value 120, at ...)``"""
    value = "n/a" if a["value"] is None else f"{a['value']:g}"
    return (
        f"{a['status'].upper()} {a['severity']} {a['rule']} on {a['machine']} ({a['zone']}): "
        f"{a['message']} (value {value}, at {a['ts']})"
    )


def alert_lines(p: dict[str, Any], limit: int | None = MAX_TEXT_ALERTS) -> list[str]:
    if is_booking(p):
        return booking_lines(p)
    alerts = p["alerts"]
    shown = alerts if limit is None else alerts[:limit]
    lines = [alert_line(a) for a in shown]
    if len(alerts) > len(shown):
        lines.append(f"... and {len(alerts) - len(shown)} more (GET /api/alerts on the gateway)")
    return lines


# --------------------------------------------------------------------------- legacy rows


def upgrade(channel: str, p: dict[str, Any]) -> dict[str, Any]:
    """A stored row as a notification payload: grouped rows as they are, a legacy
    per-transition row as the notification of its one alert (group: its rule and machine)."""
    if "alerts" in p or is_booking(p):
        return p
    firing = bool(p["firing"])
    alert = {
        "rule": p["rule"],
        "machine": p["machine"],
        "zone": p["zone"],
        "owner": p.get("owner", ""),
        "severity": p["severity"],
        "status": "firing" if firing else "resolved",
        "firing": firing,
        "value": p["value"],
        "message": p["message"],
        "ts": p["ts"],
        "ts_ms": p["ts_ms"],
        "since": p["ts"],  # not kept in legacy rows
        "since_ms": p["ts_ms"],
    }
    return {
        "site": p["site"],
        "channel": channel,
        "kind": "firing" if firing else "resolved",
        "group": {"rule": p["rule"], "machine": p["machine"]},
        "ts": p["ts"],
        "ts_ms": p["ts_ms"],
        "counts": {"firing": int(firing), "resolved": int(not firing)},
        "alerts": [alert],
    }

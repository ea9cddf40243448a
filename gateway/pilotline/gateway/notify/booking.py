"""Booking notifications: what a channel is told when a reservation moves (issue 15), and
their text.

Calendar feeds are polled every few hours; these say at once that an owner must approve a
request, that a booking was confirmed, rejected, cancelled (late or not), missed (no_show) or
preempted. One payload per (event, channel), ``kind: booking``, queued in the durable
``notifications`` outbox like an alert notification and sent by the same senders::

    {"site": "marseille-pilot", "channel": "acme-desk", "kind": "booking",
     "event": "no_show", "event_id": 17, "ts": ..., "ts_ms": ..., "by": "pilotline",
     "note": "idle, not running, by the end of the no-show grace", "late": null,
     "reservation": {"id": "r_...", "machine": "laser-01", "zone": "photonics",
                     "owner": "acme-optics", "tenant": "smallco", "status": "no_show",
                     "start": ..., "start_ms": ..., "end": ..., "end_ms": ...,
                     "predecessor": null, "purpose": "..."}}

``event_id`` is the store's event id: a receiver that must not act twice on a notification
delivered again (delivery is at least once) keys on it. The reminders ``starting_soon`` (a
confirmed booking starts within ``alerts.booking_starting_soon``) and ``overrun`` (the machine
still runs ``alerts.booking_overrun`` past a used booking's end) are no status move: their
``event_id`` is null, and each is told once per reservation, so a receiver keys on
``(event, reservation.id)``. ``late`` is true or false for a
cancellation (inside the machine's ``late_cancel`` threshold of its start, or not).
"""

from __future__ import annotations

from typing import Any

from pilotline.gateway.timefmt import iso
from pilotline.rules.booking import Reservation, Status

__all__ = [
    "EVENTS",
    "booking_lines",
    "booking_payload",
    "booking_title",
    "is_booking",
    "without_parties",
]

EVENTS = {
    Status.REQUESTED: "requested",
    Status.CONFIRMED: "confirmed",
    Status.REJECTED: "rejected",
    Status.CANCELLED: "cancelled",
    Status.NO_SHOW: "no_show",
    Status.PREEMPTED: "preempted",
}
"""The moves that are told (held, active, completed and expired holds are not: a front end
sees its own holds, and an active booking is the machine running as planned)."""


def is_booking(p: dict[str, Any]) -> bool:
    return p.get("kind") == "booking"


def booking_payload(
    site: str,
    channel: str,
    *,
    event: str,
    event_id: int | None,
    at_ms: int,
    by: str,
    note: str,
    late: bool | None,
    res: Reservation,
    zone: str,
    owner: str,
) -> dict[str, Any]:
    return {
        "site": site,
        "channel": channel,
        "kind": "booking",
        "event": event,
        "event_id": event_id,
        "ts": iso(at_ms),
        "ts_ms": at_ms,
        "by": by,
        "note": note,
        "late": late,
        "reservation": {
            "id": res.id,
            "machine": res.machine,
            "zone": zone,
            "owner": owner,
            "tenant": res.tenant,
            "status": res.status.value,
            "start": iso(res.start_ms),
            "start_ms": res.start_ms,
            "end": iso(res.end_ms),
            "end_ms": res.end_ms,
            "predecessor": res.predecessor,
            "purpose": res.purpose,
        },
    }


def without_parties(p: dict[str, Any]) -> dict[str, Any]:
    """``p`` without who is involved (owner, tenant, purpose, who made the move), for a
    channel whose readers may be anyone (a non-private MQTT channel)."""
    hidden = {"owner", "tenant", "purpose"}
    res = {k: v for k, v in p["reservation"].items() if k not in hidden}
    return {**p, "by": None, "reservation": res}


def booking_title(p: dict[str, Any]) -> str:
    """``[BOOKING no_show] laser-01 2026-12-05T09:00:00.000+00:00 (smallco)``"""
    r = p["reservation"]
    tenant = f" ({r['tenant']})" if r.get("tenant") else ""
    late = " late" if p.get("late") else ""
    return f"[BOOKING {p['event']}{late}] {r['machine']} {r['start']}{tenant}"


_SAYS = {
    "requested": "asks for the owner's approval: POST /api/reservations/{id}/approve or "
    "/reject",
    "confirmed": "is confirmed",
    "rejected": "was rejected by the owner; its time is free again",
    "cancelled": "was cancelled; its time is free again",
    "no_show": "was not used: the machine did not run by the end of the no-show grace",
    "preempted": "could not be used: the machine was not available",
    "starting_soon": "starts soon",
    "overrun": "is over, and the machine is still running",
}


def booking_lines(p: dict[str, Any]) -> list[str]:
    r = p["reservation"]
    who = f" of {r['tenant']}" if r.get("tenant") else ""
    owner = f", owner {r['owner']}" if r.get("owner") else ""
    says = _SAYS.get(p["event"], p["event"]).replace("{id}", r["id"])
    if p["event"] == "cancelled" and p.get("late") is not None:
        says += " (a late cancellation)" if p["late"] else " (in time)"
    lines = [
        f"Reservation {r['id']}{who} on {r['machine']} ({r['zone']}{owner}), "
        f"{r['start']} to {r['end']}, {says}.",
    ]
    if p.get("note"):
        lines.append(f"Note: {p['note']}")
    if p.get("by"):
        lines.append(f"By: {p['by']}, at {p['ts']}")
    if r.get("predecessor"):
        lines.append(f"It replaces {r['predecessor']}.")
    return lines

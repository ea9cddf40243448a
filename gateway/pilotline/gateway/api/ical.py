"""A principal's bookings as an RFC 5545 calendar (``icalendar`` writes the escaping, line
folding and UTC times).

One VEVENT per reservation the principal may see whose end is at most ``FEED_PAST_MS`` ago:

- ``UID`` ``<reservation id>@pilotline``: stable for the reservation's life, so a client
  updates the event in place;
- ``SEQUENCE``: how many times its status moved (its events in the store, less the first), so
  it rises with each change; ``LAST-MODIFIED`` and ``DTSTAMP``: its last move, so an
  unchanged booking is the same text at every poll;
- ``STATUS``: ``TENTATIVE`` while the owner has not approved it; ``CONFIRMED`` when
  confirmed, active, completed or a no-show (the time was booked); ``CANCELLED`` when
  cancelled, rejected or preempted, kept in the feed for ``FEED_PAST_MS`` after its end so
  clients learn of it. Holds and expired holds are not shown: they never were bookings;
- ``SUMMARY`` ``laser-01: confirmed`` (with ``for <tenant>`` for owners and operators);
- a successor (a move, an extension) has ``RELATED-TO;RELTYPE=SIBLING`` its predecessor's UID.

A machine's feed read by someone who may not see who booked (a tenant, for others' bookings)
shows those as anonymous busy time: ``SUMMARY`` ``laser-01: busy``, no description, and only
while they hold the time (not cancelled). An owner's feed also shows each of its machines'
offered time ahead (api/feed_offers.py) as ``SUMMARY`` ``laser-01: offered``,
``TRANSP:TRANSPARENT`` (free time, not busy), UID ``offered-<machine>-<start ms>@pilotline``.

The calendar says how often to poll (``REFRESH-INTERVAL``, RFC 7986, and ``X-PUBLISHED-TTL``
for Outlook); common clients poll every few hours whatever it says, which is why booking
moves are also notified (service/booking_notices.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Final

from icalendar import Calendar, Event

from pilotline.rules.booking import Reservation, Status

__all__ = ["FEED_PAST_MS", "REFRESH", "calendar", "ical_status"]

FEED_PAST_MS: Final = 30 * 86_400_000
"""Bookings that ended longer ago than this drop out of the feed."""
REFRESH: Final = timedelta(hours=1)
"""The poll interval the feed asks for."""

_STATUS: Final = {
    Status.REQUESTED: "TENTATIVE",
    Status.CONFIRMED: "CONFIRMED",
    Status.ACTIVE: "CONFIRMED",
    Status.COMPLETED: "CONFIRMED",
    Status.NO_SHOW: "CONFIRMED",
    Status.CANCELLED: "CANCELLED",
    Status.REJECTED: "CANCELLED",
    Status.PREEMPTED: "CANCELLED",
}
SHOWN: Final = frozenset(_STATUS)


def ical_status(status: Status) -> str | None:
    """The VEVENT STATUS of a reservation's status; None: not in a feed."""
    return _STATUS.get(status)


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def uid(rid: str) -> str:
    return f"{rid}@pilotline"


def calendar(
    name: str,
    reservations: Iterable[Reservation],
    history: Callable[[str], list[tuple[Status, int, str, str]]],
    *,
    tenants: bool,
    zone_of: Callable[[str], str],
    busy: Callable[[Reservation], bool] = lambda _: False,
    offered: Iterable[tuple[str, tuple[int, int]]] = (),
    now_ms: int = 0,
) -> bytes:
    """The feed named ``name``: ``history(id)`` is a reservation's moves (status, at_ms, by,
    note; oldest first); ``tenants``: name the tenant in each event; ``busy(res)``: show
    ``res`` as anonymous busy time; ``offered``: (machine, [start, end)) of offered time,
    stamped ``now_ms``."""
    cal = Calendar()
    cal.add("prodid", "-//pilotline//booking feed//EN")
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", "PUBLISH")
    cal.add("x-wr-calname", name)
    cal.add("refresh-interval", REFRESH, parameters={"VALUE": "DURATION"})
    cal.add("x-published-ttl", "PT1H")
    for res in reservations:
        status = ical_status(res.status)
        if status is None:
            continue
        hidden = busy(res)
        if hidden and status == "CANCELLED":
            continue  # someone else's, and no longer holding the time
        moves = history(res.id)
        last_ms = moves[-1][1] if moves else res.created_ms
        event = Event()
        event.add("uid", uid(res.id))
        event.add("dtstamp", _utc(last_ms))
        event.add("created", _utc(res.created_ms))
        event.add("last-modified", _utc(last_ms))
        event.add("sequence", max(0, len(moves) - 1))
        event.add("dtstart", _utc(res.start_ms))
        event.add("dtend", _utc(res.end_ms))
        event.add("location", f"{res.machine} ({zone_of(res.machine)})")
        if hidden:
            event.add("summary", f"{res.machine}: busy")
        else:
            who = f" for {res.tenant}" if tenants else ""
            event.add("summary", f"{res.machine}: {res.status.value}{who}")
            lines = [f"Reservation {res.id}, {res.status.value}."]
            if res.purpose:
                lines.append(f"Purpose: {res.purpose}")
            if moves and moves[-1][3]:
                lines.append(f"Note: {moves[-1][3]}")
            event.add("description", "\n".join(lines))
        event.add("status", status)
        event.add("transp", "TRANSPARENT" if status == "CANCELLED" else "OPAQUE")
        if res.predecessor is not None and not hidden:
            event.add("related-to", uid(res.predecessor), parameters={"RELTYPE": "SIBLING"})
        cal.add_component(event)
    for machine, (start, end) in offered:
        event = Event()
        event.add("uid", f"offered-{machine}-{start}@pilotline")
        event.add("dtstamp", _utc(now_ms))
        event.add("dtstart", _utc(start))
        event.add("dtend", _utc(end))
        event.add("summary", f"{machine}: offered")
        event.add("location", f"{machine} ({zone_of(machine)})")
        event.add("transp", "TRANSPARENT")
        cal.add_component(event)
    return bytes(cal.to_ical())

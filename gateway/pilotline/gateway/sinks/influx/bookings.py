"""Reservations to lines of the time-series contract (../shared/DESIGN.md):

- a status move -> ``booking`` (site, zone, machine, owner, tenant, status), stamped at the
  reservation's start: ``reservation`` (string id), ``start_ms``, ``end_ms``,
  ``status_code`` (int, ``rules.booking.codes``); one point per status a reservation reaches
  (the ``status`` tag keeps them apart);
- its metered use when it ends -> ``usage`` (site, zone, machine, owner, tenant), stamped at
  its start: ``booked_s`` (its length), ``running_s``, ``idle_s``, ``down_s`` (down and
  maintenance: not usable), ``offline_s``, ``overrun_s``, ``charge`` (floats), ``no_show``
  (0/1). A correction is the same point again (same series and time: it replaces the first).

Both at ``PRIORITY_EVENT``: bookings are never shed before raw telemetry.
"""

from __future__ import annotations

from pilotline.gateway.sinks.influx.lineproto import line_from_key, series_key
from pilotline.gateway.sinks.influx.points import PRIORITY_EVENT
from pilotline.rules.booking import Reservation, Status, Usage
from pilotline.rules.booking.codes import status_code

BOOKING = "booking"
USAGE = "usage"


def booking_row(
    site: str, zone: str, owner: str, res: Reservation, status: Status
) -> tuple[int, str]:
    """``(PRIORITY_EVENT, booking line)`` of ``res`` reaching ``status``."""
    key = series_key(BOOKING, {
        "site": site, "zone": zone, "machine": res.machine, "owner": owner,
        "tenant": res.tenant, "status": status.value,
    })
    fields: dict[str, int | str] = {
        "reservation": res.id,
        "start_ms": res.start_ms,
        "end_ms": res.end_ms,
        "status_code": status_code(status),
    }
    return PRIORITY_EVENT, line_from_key(key, fields, res.start_ms)


def usage_row(
    site: str, zone: str, owner: str, res: Reservation, usage: Usage, *, charge: float,
    no_show: bool,
) -> tuple[int, str]:
    """``(PRIORITY_EVENT, usage line)`` of ``res`` metered as ``usage``."""
    key = series_key(USAGE, {
        "site": site, "zone": zone, "machine": res.machine, "owner": owner,
        "tenant": res.tenant,
    })
    fields: dict[str, float | int] = {
        "booked_s": (res.end_ms - res.start_ms) / 1000.0,
        "running_s": usage.running_ms / 1000.0,
        "idle_s": usage.idle_ms / 1000.0,
        "down_s": (usage.down_ms + usage.maintenance_ms) / 1000.0,
        "offline_s": usage.offline_ms / 1000.0,
        "overrun_s": usage.overrun_ms / 1000.0,
        "charge": float(charge),
        "no_show": int(no_show),
    }
    return PRIORITY_EVENT, line_from_key(key, fields, res.start_ms)

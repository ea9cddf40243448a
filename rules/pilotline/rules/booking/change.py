"""Changing a reservation (a move or an extension): what a change may do on top of ``check``,
and the status its successor takes. History is never edited: the shell inserts the successor
(``predecessor`` = the old one) and cancels the predecessor in one transaction.

Rules, in plain words:
- The successor keeps every booking rule (``check`` with ``Request.replaces``: the
  predecessor's own time does not conflict, its hours do not count twice for the quota, a
  start it keeps needs no notice, and the time it already held stays granted even if the
  offer has shrunk since).
- An ``active`` booking is in use: its start cannot change, only its end.
- Its end must still be ahead: a change cannot end in the past.
- Closer than ``late_cancel`` to the start of a confirmed or active booking, a change can only
  add time (the successor covers the predecessor): giving time back that late is a late
  cancel, so the tenant cancels (and is charged as the owner's rule says) instead.
- The successor takes its predecessor's status: ``held`` stays ``held`` (with a fresh hold),
  ``requested`` stays ``requested``, ``active`` stays ``active`` (its use has started;
  metering goes on from the same start, so it is never judged a no-show). A ``confirmed`` one
  stays ``confirmed``, except where the owner approves bookings and the change comes from the
  tenant: the new time is ``requested`` again (the old time is given up; if the owner
  rejects, the tenant has neither). An ``active`` booking on such a machine is extended by
  its owner or an operator only.
"""

from __future__ import annotations

from pilotline.rules.booking.check import Refused, _minutes
from pilotline.rules.booking.reservation import BookingRules, Reservation, Status


def refuse_change(
    old: Reservation, start_ms: int, end_ms: int, rules: BookingRules, now_ms: int
) -> Refused | None:
    """The rule a change of live ``old`` to ``[start_ms, end_ms)`` breaks beyond ``check``'s,
    or None."""
    if old.status is Status.ACTIVE and start_ms != old.start_ms:
        return Refused("active", "the booking is in use: only its end can change")
    if end_ms <= now_ms:
        return Refused("notice", "the end is in the past")
    committed = old.status in (Status.CONFIRMED, Status.ACTIVE)
    late = now_ms >= old.start_ms - rules.late_cancel_ms
    if committed and late and not (start_ms <= old.start_ms and old.end_ms <= end_ms):
        return Refused(
            "late_cancel",
            f"less than {_minutes(rules.late_cancel_ms)} before its start a booking can only"
            " grow: to give time back, cancel it (a late cancel)",
        )
    return None


def successor_status(old: Reservation, *, approval: bool) -> Status | Refused:
    """The status ``old``'s successor takes; ``approval``: the machine's owner approves
    bookings and the change comes from the tenant."""
    if old.status is Status.CONFIRMED and approval:
        return Status.REQUESTED
    if old.status is Status.ACTIVE and approval:
        return Refused(
            "approval", "the machine's owner approves bookings: ask the owner to extend it"
        )
    return old.status


def change_kind(old: Reservation, start_ms: int, end_ms: int) -> str:
    """``extended``, ``shortened`` or ``moved``: the word for the predecessor's note."""
    if start_ms == old.start_ms:
        return "extended" if end_ms >= old.end_ms else "shortened"
    return "moved"

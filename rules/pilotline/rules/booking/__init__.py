"""Booking in the pure core: reservations, the rules a request must keep, offers (bookable
time) and metering from the machine's own confirmed states. No I/O, no clock: the shell keeps
reservations in its store and calls these with the time.

Names follow DESIGN.md's booking contract (statuses, metering figures)."""

from pilotline.rules.booking.check import Accepted, Conflict, Refused, Verdict, check
from pilotline.rules.booking.intervals import Interval
from pilotline.rules.booking.metering import Usage, meter, outcome
from pilotline.rules.booking.offers import allowed, free_slots
from pilotline.rules.booking.reservation import LIVE, BookingRules, Request, Reservation, Status

__all__ = [
    "LIVE",
    "Accepted",
    "BookingRules",
    "Conflict",
    "Interval",
    "Refused",
    "Request",
    "Reservation",
    "Status",
    "Usage",
    "Verdict",
    "allowed",
    "check",
    "free_slots",
    "meter",
    "outcome",
]

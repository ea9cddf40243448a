"""Booking-aware capacity: what a machine offers now, given its live reservations.

Rules, in plain words:
- A live reservation (``held``, ``requested``, ``confirmed``, ``active``: each blocks every
  other request for its time) *reserves* its machine over ``[start, end)``; a hold whose
  ``hold_until`` has come holds nothing, expired or not yet (as the store's requests see it).
- A reserved machine is not offered to anyone else, whatever its state and its owner's
  policy: ``offered`` is the machine's own offer (idle long enough, inside the policy) and
  not reserved. ``available`` (measured idle time) is not changed: it is what the machine
  does, not what is sold.
- A zone's ``reserved`` counts its machines reserved at the time of the report.

The machine's clocks (machine.py, plant.py) know nothing of bookings: the shell keeps the
live reservations and asks this module, with the time of each capacity report.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from pilotline.rules.booking.reservation import Reservation, Status


@dataclass(frozen=True, slots=True)
class Offered:
    """A machine's capacity at one time, bookings included."""

    offered: bool  # bookable by anyone now
    reserved: bool  # a live reservation covers now
    booking: Reservation | None = None  # the one that does


def covering(reservations: Iterable[Reservation], t_ms: int) -> Reservation | None:
    """The live reservation of ``reservations`` whose ``[start, end)`` holds ``t_ms``, or
    None. Live ones never overlap (the store's check); if given overlapping ones anyway, the
    earliest start wins."""
    found: Reservation | None = None
    for res in reservations:
        if (
            _holds(res, t_ms)
            and res.start_ms <= t_ms < res.end_ms
            and (found is None or res.start_ms < found.start_ms)
        ):
            found = res
    return found


def _holds(res: Reservation, t_ms: int) -> bool:
    if res.status is Status.HELD and res.hold_until_ms is not None:
        return t_ms < res.hold_until_ms
    return res.live


def offered_now(offered: bool, reservations: Iterable[Reservation], t_ms: int) -> Offered:
    """The machine's own ``offered`` (available and inside its owner's policy) at ``t_ms``,
    with its ``reservations``: reserved, it is not offered."""
    booking = covering(reservations, t_ms)
    return Offered(offered and booking is None, booking is not None, booking)


def reserved_count(
    members: Iterable[str], reservations: Mapping[str, Sequence[Reservation]], t_ms: int
) -> int:
    """How many of ``members`` (machine ids) a live reservation covers at ``t_ms``."""
    return sum(covering(reservations.get(m, ()), t_ms) is not None for m in members)


"""The soft interlock (issue 15): what a machine's access signal says at a time, given its
reservations. An access signal for the machine's HMI or controller, never a safety function.

Theory of operation. A booking *holds* its machine (``HOLDING``: ``confirmed``, ``active``,
or ``completed`` for the tail after its end) from ``start - lead`` to ``end + off_delay``
(NUcore switches an instrument off N minutes after the reserved end, so a run that finishes a
little late is not cut). The signal is ``enabled`` while some booking holds the machine, with
that booking's id, tenant and ``until`` (its ``end + off_delay``); ``disabled`` otherwise.
Where two windows meet (one tenant's off-delay tail over the next one's lead), the booking
whose own ``[start, end)`` contains the time wins, else the later start: the tenant due next.

``signal`` is a pure function of the reservations and the time; ``next_change`` says when
it may change next with the same reservations, so the shell arms one timer (and re-reads
the reservations when they change). No clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pilotline.rules.booking.reservation import Reservation, Status

__all__ = ["DISABLED", "HOLDING", "Signal", "Timing", "next_change", "signal", "window"]

HOLDING = frozenset({Status.CONFIRMED, Status.ACTIVE, Status.COMPLETED})
"""Statuses whose booking may hold its machine. ``completed`` only ever holds in its off-delay
tail (the lifecycle completes a booking at its end); ``held`` and ``requested`` are not
bookings yet; ``no_show``, ``preempted``, ``cancelled`` release the machine at once."""


@dataclass(frozen=True, slots=True)
class Timing:
    """``lead_ms``: enabled this long before a booking's start (the tenant sets up);
    ``off_delay_ms``: still enabled this long after its end."""

    lead_ms: int = 0
    off_delay_ms: int = 0

    def __post_init__(self) -> None:
        if self.lead_ms < 0 or self.off_delay_ms < 0:
            raise ValueError("lead_ms and off_delay_ms must not be negative")


@dataclass(frozen=True, slots=True)
class Signal:
    """What the interlock says: ``enabled``, and while enabled the booking behind it and the
    time (epoch ms) it ends at unless the reservations change."""

    enabled: bool
    reservation: str | None = None
    tenant: str | None = None
    until_ms: int | None = None


DISABLED = Signal(False)


def window(res: Reservation, timing: Timing) -> tuple[int, int]:
    """``[start - lead, end + off_delay)``: when ``res`` may hold its machine."""
    return res.start_ms - timing.lead_ms, res.end_ms + timing.off_delay_ms


def _holds(res: Reservation, timing: Timing, now_ms: int) -> bool:
    if res.status not in HOLDING:
        return False
    start, end = window(res, timing)
    return start <= now_ms < end


def signal(reservations: Iterable[Reservation], now_ms: int, timing: Timing) -> Signal:
    """The interlock of one machine at ``now_ms`` (``reservations``: that machine's, any
    status, any order)."""
    holding = [r for r in reservations if _holds(r, timing, now_ms)]
    if not holding:
        return DISABLED
    best = max(
        holding, key=lambda r: (r.start_ms <= now_ms < r.end_ms, r.start_ms, r.id)
    )
    return Signal(True, best.id, best.tenant, best.end_ms + timing.off_delay_ms)


def next_change(
    reservations: Iterable[Reservation], now_ms: int, timing: Timing
) -> int | None:
    """The first time after ``now_ms`` at which ``signal`` may answer otherwise with the same
    reservations (a window's edge, or a booking's own start or end where windows meet), or
    None: never."""
    edges: list[int] = []
    for res in reservations:
        if res.status in HOLDING:
            edges.extend((*window(res, timing), res.start_ms, res.end_ms))
    later = [t for t in edges if t > now_ms]
    return min(later) if later else None

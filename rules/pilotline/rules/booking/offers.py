"""Offers: a machine's future bookable time. Its policy's allowed spans minus planned
maintenance, minus live reservations and their buffers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pilotline.rules.booking.check import blocked
from pilotline.rules.booking.intervals import Interval, merge, subtract
from pilotline.rules.booking.reservation import Reservation
from pilotline.rules.policy import OfferingPolicy

_STEP_MS = 6 * 86_400_000  # how far to look when the policy sees no edge within its horizon


def allowed(policy: OfferingPolicy, from_ms: int, to_ms: int) -> list[Interval]:
    """Where ``policy`` allows offering within ``[from_ms, to_ms)``."""
    out: list[Interval] = []
    t = from_ms
    while t < to_ms:
        span = policy.span(t)
        end = span.end_ms if span.end_ms is not None and span.end_ms > t else t + _STEP_MS
        end = min(end, to_ms)
        if span.allowed:
            out.append((t, end))
        t = end
    return merge(out)


def free_slots(
    offered: Sequence[Interval],
    reservations: Iterable[Reservation],
    buffer_ms: int,
    maintenance: Iterable[Interval] = (),
) -> list[Interval]:
    """The offered time still bookable: not planned for maintenance, not held by a live
    reservation or its buffer."""
    holes = [span for _, span in blocked(reservations, buffer_ms)]
    return subtract(offered, [*holes, *maintenance])

"""The offered time an owner's calendar feed shows: each machine's free bookable time for the
next ``OFFERS_AHEAD_MS``, computed as ``GET /api/offers`` computes its slots (the policy's
``allowed`` time, minus planned maintenance, minus live reservations and their buffers with
``free_slots``; a hold past its time holds nothing), then contiguous slots merged into one
event each, so a week of open hours is a few events, not one per step."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from pilotline.rules.booking import BookingRules, Interval, Reservation, Status, allowed, free_slots
from pilotline.rules.booking.intervals import subtract
from pilotline.rules.spec import MachineSpec

__all__ = ["OFFERS_AHEAD_MS", "merged", "offered_time"]

OFFERS_AHEAD_MS: Final = 28 * 86_400_000
"""How far ahead a feed shows offered time (4 weeks)."""


def merged(spans: Iterable[Interval]) -> list[Interval]:
    """``spans`` sorted, with those that touch or overlap joined."""
    out: list[Interval] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def offered_time(
    spec: MachineSpec,
    rules: BookingRules,
    maintenance: Iterable[Interval],
    reservations: Iterable[Reservation],
    *,
    from_ms: int,
    to_ms: int,
    now_ms: int,
) -> list[Interval]:
    """``spec``'s free bookable time in ``[from_ms, to_ms)``, contiguous slots merged.
    ``reservations``: the machine's, overlapping the window widened by the buffer."""
    spans = subtract(allowed(spec.policy, from_ms, to_ms), list(maintenance))
    held = [r for r in reservations if r.status is not Status.HELD
            or r.hold_until_ms is None or r.hold_until_ms > now_ms]
    return merged(free_slots(spans, held, rules.buffer_ms))

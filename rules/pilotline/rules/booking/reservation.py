"""A reservation, its lifecycle, and the rules an owner sets for booking a machine."""

from __future__ import annotations

import enum
from dataclasses import dataclass

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


class Status(enum.Enum):
    """DESIGN.md's lifecycle: ``held`` → ``requested`` (when the owner approves) →
    ``confirmed`` → ``active`` → ``completed``; or ``cancelled``, ``rejected``, ``expired``,
    ``no_show``, ``preempted``."""

    HELD = "held"
    REQUESTED = "requested"
    CONFIRMED = "confirmed"
    ACTIVE = "active"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    NO_SHOW = "no_show"
    PREEMPTED = "preempted"


LIVE = frozenset({Status.HELD, Status.REQUESTED, Status.CONFIRMED, Status.ACTIVE})
"""Statuses that hold their time: two live reservations of one machine never overlap,
buffers included."""


@dataclass(frozen=True, slots=True)
class Reservation:
    id: str
    machine: str
    tenant: str
    start_ms: int
    end_ms: int
    status: Status
    created_ms: int = 0
    predecessor: str | None = None  # a move or an extension is a successor of this one
    purpose: str = ""
    hold_until_ms: int | None = None  # a hold expires by itself then

    @property
    def live(self) -> bool:
        return self.status in LIVE


@dataclass(frozen=True, slots=True)
class Request:
    """What a tenant asks for; ``replaces``: the reservation a move or an extension succeeds
    (its own time does not conflict with its successor)."""

    machine: str
    tenant: str
    start_ms: int
    end_ms: int
    replaces: str | None = None


@dataclass(frozen=True, slots=True)
class BookingRules:
    """Per machine (or its owner's): what a request must keep. Zero means no limit where a
    limit makes no sense at zero (``max_length_ms``, ``horizon_ms``, quotas)."""

    min_length_ms: int = 15 * 60_000
    max_length_ms: int = 0
    min_notice_ms: int = 0
    horizon_ms: int = 90 * DAY_MS
    buffer_ms: int = 0
    step_ms: int = 15 * 60_000  # starts and ends on this grid (local to epoch: UTC minutes)
    approval: bool = False
    hold_ms: int = 10 * 60_000
    quota_ms: int = 0  # per tenant and period, 0: none
    quota_period_ms: int = 7 * DAY_MS
    early_grace_ms: int = 15 * 60_000  # running this long before the start counts as use
    no_show_grace_ms: int = 15 * 60_000  # not running by start + this: no_show
    late_cancel_ms: int = DAY_MS  # a cancellation closer than this to the start is late

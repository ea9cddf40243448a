"""The ``status_code`` of the ``booking`` measurement: a stable integer per status, so a
panel can plot a reservation's lifecycle. Codes are a contract (README, time-series
contract): never renumber one; a new status gets the next free code."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from pilotline.rules.booking.reservation import Status

STATUS_CODES: Final[Mapping[Status, int]] = MappingProxyType({
    Status.HELD: 1,
    Status.REQUESTED: 2,
    Status.CONFIRMED: 3,
    Status.ACTIVE: 4,
    Status.COMPLETED: 5,
    Status.CANCELLED: 6,
    Status.REJECTED: 7,
    Status.EXPIRED: 8,
    Status.NO_SHOW: 9,
    Status.PREEMPTED: 10,
})

ENDED: Final = frozenset({Status.COMPLETED, Status.NO_SHOW, Status.PREEMPTED})
"""Statuses in which a reservation that reached its time has ended: its use is metered
(the ``usage`` measurement). A ``cancelled`` one ends so too when cancelled after its
start."""


def status_code(status: Status) -> int:
    return STATUS_CODES[status]


def ends_use(status: Status, at_ms: int, start_ms: int) -> bool:
    """Whether a move to ``status`` at ``at_ms`` ends a reservation starting at ``start_ms``
    with use to meter: completed, no-show, preempted, or cancelled after its start."""
    return status in ENDED or (status is Status.CANCELLED and at_ms >= start_ms)

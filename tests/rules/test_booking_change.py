"""The rules of a change in the pure core (rules/booking/change.py): an active booking keeps
its start, a change ends ahead, close to the start a committed booking can only grow, and the
status the successor takes."""

from __future__ import annotations

import pytest

from pilotline.rules.booking import BookingRules, Refused, Reservation, Status
from pilotline.rules.booking.change import change_kind, refuse_change, successor_status

HOUR = 3_600_000
NOW = 100 * HOUR
RULES = BookingRules(late_cancel_ms=2 * HOUR)


def res(status: Status, start: int = NOW + 5 * HOUR, end: int = NOW + 6 * HOUR) -> Reservation:
    return Reservation("r1", "m1", "acme", start, end, status)


def rule(answer: Refused | None) -> str | None:
    return None if answer is None else answer.rule


def test_what_a_change_may_do() -> None:
    far = res(Status.CONFIRMED)
    assert rule(refuse_change(far, NOW + 8 * HOUR, NOW + 9 * HOUR, RULES, NOW)) is None
    assert rule(refuse_change(far, far.start_ms, NOW + 5 * HOUR + HOUR // 2, RULES, NOW)) is None
    near = res(Status.CONFIRMED, NOW + HOUR, NOW + 2 * HOUR)
    assert rule(refuse_change(near, near.start_ms, NOW + HOUR + HOUR // 2, RULES, NOW)) == (
        "late_cancel"
    )
    assert rule(refuse_change(near, NOW + HOUR // 2, NOW + 3 * HOUR, RULES, NOW)) is None
    # a hold commits nothing yet: it may shrink at any time
    held = res(Status.HELD, NOW + HOUR, NOW + 2 * HOUR)
    assert rule(refuse_change(held, held.start_ms, NOW + HOUR + HOUR // 2, RULES, NOW)) is None
    active = res(Status.ACTIVE, NOW - HOUR, NOW + HOUR)
    assert rule(refuse_change(active, NOW, NOW + 2 * HOUR, RULES, NOW)) == "active"
    assert rule(refuse_change(active, NOW - HOUR, NOW, RULES, NOW)) == "notice"
    assert rule(refuse_change(active, NOW - HOUR, NOW + 2 * HOUR, RULES, NOW)) is None


@pytest.mark.parametrize(("status", "approval", "to"), [
    (Status.HELD, True, Status.HELD),
    (Status.REQUESTED, True, Status.REQUESTED),
    (Status.CONFIRMED, False, Status.CONFIRMED),
    (Status.CONFIRMED, True, Status.REQUESTED),
    (Status.ACTIVE, False, Status.ACTIVE),
])
def test_the_successor_takes_its_predecessors_status(
    status: Status, approval: bool, to: Status
) -> None:
    assert successor_status(res(status), approval=approval) is to


def test_an_active_booking_where_the_owner_approves_is_extended_by_the_owner() -> None:
    answer = successor_status(res(Status.ACTIVE), approval=True)
    assert isinstance(answer, Refused)
    assert answer.rule == "approval"


def test_the_kind_of_change() -> None:
    old = res(Status.CONFIRMED)
    assert change_kind(old, old.start_ms, old.end_ms + HOUR) == "extended"
    assert change_kind(old, old.start_ms, old.end_ms - HOUR // 2) == "shortened"
    assert change_kind(old, old.start_ms + HOUR, old.end_ms + HOUR) == "moved"

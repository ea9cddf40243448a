"""Charges in the pure core (rules/booking/charges.py): each basis on a worked example, the
statuses that cost nothing, the late-cancel fee and its waiver, and properties over random
rules and uses. No peer, no clock."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pilotline.rules.booking import Reservation, Status, Usage
from pilotline.rules.booking.charges import (
    Basis,
    ChargeRule,
    billed_ms,
    charge,
    late_cancel,
    reused,
)

MIN = 60_000
HOUR = 60 * MIN
T0 = 1_800_000_000_000 - 1_800_000_000_000 % HOUR

BOOKING = Reservation("r_1", "laser-01", "smallco", T0, T0 + 2 * HOUR, Status.COMPLETED)
# ran 70 min of the 2 h, idle 50 min, and 10 min past the end
USAGE = Usage(running_ms=70 * MIN, idle_ms=50 * MIN, overrun_ms=10 * MIN)
RULE = ChargeRule(rate_per_hour=60.0, step_ms=15 * MIN)


@pytest.mark.parametrize(
    ("basis", "unused", "amount"),
    [
        (Basis.RESERVATION, 0.0, 120.0),  # 2 h booked
        (Basis.USE, 0.0, 90.0),  # 80 min used, rounded up to 90
        (Basis.USE, 0.5, 105.0),  # 80 + 25 (half of 50 unused) = 105 min, on the grid
        (Basis.OVERAGE, 0.0, 135.0),  # 130 min, rounded up to 135
        (Basis.MAX, 0.0, 120.0),  # the larger of 120 booked and 90 used
        (Basis.MAX, 1.0, 135.0),  # use with all unused time: 130 -> 135
    ],
)
def test_each_basis_bills_what_its_docstring_says(
    basis: Basis, unused: float, amount: float
) -> None:
    rule = replace(RULE, basis=basis, unused_fraction=unused)
    assert charge(rule, BOOKING, USAGE).amount == amount


def test_the_minimum_and_the_no_show_fraction() -> None:
    rule = replace(RULE, basis=Basis.USE, minimum_ms=HOUR)
    idle = Usage(running_ms=5 * MIN, idle_ms=115 * MIN)
    assert charge(rule, BOOKING, idle).amount == 60.0  # 5 min used, billed the hour minimum
    no_show = replace(BOOKING, status=Status.NO_SHOW)
    half = replace(RULE, no_show_fraction=0.5)
    assert charge(half, no_show, Usage(idle_ms=2 * HOUR)).amount == 60.0


@pytest.mark.parametrize(
    "status", [Status.HELD, Status.REQUESTED, Status.REJECTED, Status.EXPIRED, Status.PREEMPTED,
               Status.CANCELLED],
)
def test_what_costs_nothing(status: Status) -> None:
    rule = replace(RULE, minimum_ms=HOUR, late_cancel_fee=25.0)
    assert charge(rule, replace(BOOKING, status=status), USAGE).amount == 0.0


def test_a_late_cancellation_pays_the_fee_unless_the_slot_was_reused() -> None:
    rule = replace(RULE, late_cancel_fee=25.0)
    cancelled = replace(BOOKING, status=Status.CANCELLED)
    assert late_cancel(cancelled, Status.CONFIRMED, T0 - HOUR, 24 * HOUR)
    assert not late_cancel(cancelled, Status.CONFIRMED, T0 - 25 * HOUR, 24 * HOUR)
    assert not late_cancel(cancelled, Status.HELD, T0 - HOUR, 24 * HOUR)  # never a booking
    late = charge(rule, cancelled, Usage(), late=True)
    assert (late.amount, late.late_cancel, late.waived) == (25.0, True, False)
    waived = charge(rule, cancelled, Usage(), late=True, was_reused=True)
    assert (waived.amount, waived.late_cancel, waived.waived) == (0.0, True, True)

    other = Reservation("r_2", "laser-01", "bigco", T0 + HOUR, T0 + 3 * HOUR, Status.CONFIRMED)
    assert reused(cancelled, [cancelled, other])
    assert not reused(cancelled, [replace(other, status=Status.EXPIRED)])
    assert not reused(cancelled, [replace(other, machine="press-01")])
    assert not reused(cancelled, [replace(other, start_ms=T0 + 2 * HOUR)])  # touching only


# -- properties -------------------------------------------------------------------------------

durations = st.integers(min_value=0, max_value=12 * HOUR)
fractions = st.floats(min_value=0.0, max_value=1.0)
rules = st.builds(
    ChargeRule,
    basis=st.sampled_from(list(Basis)),
    rate_per_hour=st.floats(min_value=0.0, max_value=10_000.0),
    step_ms=st.sampled_from([0, 1, MIN, 15 * MIN, HOUR]),
    minimum_ms=st.sampled_from([0, 30 * MIN, HOUR, 4 * HOUR]),
    unused_fraction=fractions,
    no_show_fraction=fractions,
    late_cancel_fee=st.floats(min_value=0.0, max_value=1_000.0),
)


@st.composite
def bookings(draw: st.DrawFn) -> tuple[Reservation, Usage]:
    length = draw(st.integers(min_value=1, max_value=12 * 4)) * 15 * MIN
    running = draw(st.integers(min_value=0, max_value=length))
    idle = draw(st.integers(min_value=0, max_value=length - running))
    down = length - running - idle
    usage = Usage(running_ms=running, idle_ms=idle, down_ms=down, overrun_ms=draw(durations))
    res = Reservation("r_1", "m", "t", T0, T0 + length, draw(st.sampled_from(list(Status))))
    return res, usage


@settings(max_examples=500, deadline=None)
@given(rules, bookings(), st.booleans(), st.booleans())
def test_a_charge_is_never_negative(
    rule: ChargeRule, booking: tuple[Reservation, Usage], late: bool, was_reused: bool
) -> None:
    res, usage = booking
    assert charge(rule, res, usage, late=late, was_reused=was_reused).amount >= 0.0


@settings(max_examples=500, deadline=None)
@given(rules, bookings())
def test_rounding_never_bills_less_than_the_unrounded_time(
    rule: ChargeRule, booking: tuple[Reservation, Usage]
) -> None:
    res, usage = booking
    booked = res.end_ms - res.start_ms
    used = usage.running_ms + usage.overrun_ms
    unused = usage.booked_ms - usage.running_ms
    raw = {
        Basis.RESERVATION: booked,
        Basis.USE: used + rule.unused_fraction * unused,
        Basis.OVERAGE: booked + usage.overrun_ms,
        Basis.MAX: max(booked, used + rule.unused_fraction * unused),
    }[rule.basis]
    billed = billed_ms(rule, booked, usage)
    assert billed >= raw
    assert billed >= rule.minimum_ms
    if rule.step_ms:
        assert billed % rule.step_ms == 0 or billed == rule.minimum_ms
        assert billed - raw < max(rule.step_ms, rule.minimum_ms) + 1


@settings(max_examples=500, deadline=None)
@given(rules, bookings())
def test_max_bills_at_least_reservation_and_use(
    rule: ChargeRule, booking: tuple[Reservation, Usage]
) -> None:
    res, usage = booking
    res = replace(res, status=Status.COMPLETED)

    def under(basis: Basis) -> float:
        return charge(replace(rule, basis=basis), res, usage).amount

    assert under(Basis.MAX) >= under(Basis.RESERVATION)
    assert under(Basis.MAX) >= under(Basis.USE)
    assert under(Basis.OVERAGE) >= under(Basis.RESERVATION)


@settings(max_examples=500, deadline=None)
@given(rules, bookings())
def test_a_no_show_never_costs_more_than_its_reservation(
    rule: ChargeRule, booking: tuple[Reservation, Usage]
) -> None:
    res, usage = booking
    no_show = charge(rule, replace(res, status=Status.NO_SHOW), usage).amount
    booked = charge(replace(rule, basis=Basis.RESERVATION),
                    replace(res, status=Status.COMPLETED), usage).amount
    assert no_show <= booked

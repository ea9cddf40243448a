"""The soft interlock's core: what a machine's access signal says, from its reservations and
the time alone. No peer, no clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pilotline.rules.booking import Reservation, Status
from pilotline.rules.booking.interlock import (
    DISABLED,
    HOLDING,
    Signal,
    Timing,
    next_change,
    signal,
    window,
)

MIN = 60_000
HOUR = 60 * MIN
T = 1_796_000_000_000  # a whole minute
TIMING = Timing(lead_ms=5 * MIN, off_delay_ms=10 * MIN)


def res(rid: str, start: int, end: int, status: Status = Status.CONFIRMED,
        tenant: str = "smallco") -> Reservation:
    return Reservation(rid, "laser-01", tenant, start, end, status)


def test_enabled_from_start_minus_lead_to_end_plus_off_delay() -> None:
    book = [res("r1", T, T + HOUR)]
    assert signal(book, T - 5 * MIN - 1, TIMING) == DISABLED
    on = Signal(True, "r1", "smallco", T + HOUR + 10 * MIN)
    assert signal(book, T - 5 * MIN, TIMING) == on
    assert signal(book, T + HOUR + 10 * MIN - 1, TIMING) == on
    assert signal(book, T + HOUR + 10 * MIN, TIMING) == DISABLED
    assert signal(book, T, Timing()) == Signal(True, "r1", "smallco", T + HOUR)
    assert signal(book, T + HOUR, Timing()) == DISABLED


def test_a_completed_booking_holds_through_its_off_delay_and_released_ones_never() -> None:
    done = res("r1", T, T + HOUR, Status.COMPLETED)
    assert signal([done], T + HOUR + MIN, TIMING).enabled
    for status in set(Status) - HOLDING:
        assert signal([res("r1", T, T + HOUR, status)], T + MIN, TIMING) == DISABLED, status


def test_the_next_tenant_takes_over_from_the_previous_ones_tail() -> None:
    first = res("a", T, T + HOUR, Status.ACTIVE, "smallco")
    second = res("b", T + HOUR, T + 2 * HOUR, tenant="tinylab")
    book = [second, first]
    assert signal(book, T + HOUR - MIN, TIMING).reservation == "a"  # a's own time
    assert signal(book, T + HOUR, TIMING).reservation == "b"  # b's own time beats a's tail
    assert signal(book, T + HOUR - MIN, TIMING) == signal(list(reversed(book)), T + HOUR - MIN,
                                                          TIMING)


def test_next_change_is_the_next_edge() -> None:
    book = [res("r1", T, T + HOUR), res("x", T, T + HOUR, Status.CANCELLED)]
    assert next_change(book, T - HOUR, TIMING) == T - 5 * MIN
    assert next_change(book, T - 5 * MIN, TIMING) == T
    assert next_change(book, T + HOUR, TIMING) == T + HOUR + 10 * MIN
    assert next_change(book, T + 2 * HOUR, TIMING) is None


def test_negative_timing_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        Timing(lead_ms=-1)


bookings = st.lists(
    st.tuples(
        st.integers(0, 48),  # start, in quarter hours
        st.integers(1, 12),  # length, in quarter hours
        st.sampled_from(list(Status)),
        st.sampled_from(["smallco", "tinylab"]),
    ),
    max_size=6,
)


@settings(max_examples=400, deadline=None)
@given(
    bookings,
    st.integers(-8 * 15 * MIN, 70 * 15 * MIN),
    st.sampled_from([0, 5 * MIN, 30 * MIN]),
    st.sampled_from([0, 10 * MIN, 45 * MIN]),
)
def test_never_enabled_outside_a_holding_window_and_always_inside_an_active_one(
    spec: list[tuple[int, int, Status, str]], offset: int, lead: int, off_delay: int
) -> None:
    timing = Timing(lead, off_delay)
    book = [
        res(f"r{n}", T + q * 15 * MIN, T + (q + length) * 15 * MIN, status, tenant)
        for n, (q, length, status, tenant) in enumerate(spec)
    ]
    now = T + offset
    said = signal(book, now, timing)
    inside = [r for r in book if r.status in HOLDING and _within(now, window(r, timing))]
    if said.enabled:
        # never enabled outside a holding booking's window; and it names that booking
        chosen = next(r for r in inside if r.id == said.reservation)
        assert (said.tenant, said.until_ms) == (chosen.tenant, chosen.end_ms + off_delay)
    # always enabled inside a confirmed or active booking's window (and a completed one's tail)
    assert said.enabled == bool(inside)
    # the same answer for any order of the reservations, and up to the next change
    assert signal(list(reversed(book)), now, timing) == said
    upto = next_change(book, now, timing)
    if upto is not None:
        assert signal(book, upto - 1, timing) == said


def _within(t: int, span: tuple[int, int]) -> bool:
    return span[0] <= t < span[1]

"""Booking in the pure core: the rules a request must keep, conflicts with their
alternatives, offers, and metering from confirmed states. No peer, no clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time

from hypothesis import given, settings
from hypothesis import strategies as st

from pilotline.rules import State
from pilotline.rules.booking import (
    Accepted,
    BookingRules,
    Conflict,
    Refused,
    Request,
    Reservation,
    Status,
    allowed,
    check,
    free_slots,
    meter,
    outcome,
)
from pilotline.rules.booking.intervals import merge, overlaps, subtract
from pilotline.rules.policy import OfferingPolicy, WeeklySlot

MIN = 60_000
HOUR = 60 * MIN
MONDAY = int(datetime(2026, 12, 7, tzinfo=UTC).timestamp() * 1000)  # 00:00 UTC
NOW = MONDAY - 24 * HOUR
RULES = BookingRules(min_length_ms=30 * MIN, max_length_ms=8 * HOUR, buffer_ms=15 * MIN)
ALL_WEEK = [(MONDAY - 7 * 24 * HOUR, MONDAY + 14 * 24 * HOUR)]


def at(hours: float) -> int:
    return MONDAY + int(hours * HOUR)


def req(start_h: float, end_h: float, tenant: str = "smallco", replaces: str | None = None) -> Request:  # noqa: E501
    return Request("laser-01", tenant, at(start_h), at(end_h), replaces)


def booked(rid: str, start_h: float, end_h: float, status: Status = Status.CONFIRMED, tenant: str = "other") -> Reservation:  # noqa: E501
    return Reservation(rid, "laser-01", tenant, at(start_h), at(end_h), status)


# -- the rules -----------------------------------------------------------------------------


def test_each_rule_refuses_with_a_sentence() -> None:
    cases = [
        (req(10, 10), RULES, "interval", "the end must come after the start"),
        (req(10, 10.1), RULES, "step", "15 min grid"),
        (req(10, 10.25), RULES, "length", "at least 30 min"),
        (req(10, 19), RULES, "length", "at most 8 h"),
        (Request("laser-01", "smallco", NOW - HOUR, NOW), RULES, "notice", "in the past"),
        (req(-23.75, -23), replace(RULES, min_notice_ms=2 * HOUR), "notice", "2 h ahead"),
        (req(24 * 100, 24 * 100 + 1), RULES, "horizon", "ahead"),
    ]
    for request, rules, rule, words in cases:
        verdict = check(request, rules, [], ALL_WEEK, NOW)
        assert isinstance(verdict, Refused), (rule, verdict)
        assert verdict.rule == rule
        assert words in verdict.message


def test_a_request_outside_the_offer_is_refused() -> None:
    offered = [(at(18), at(30))]  # tonight only
    assert check(req(20, 22), RULES, [], offered, NOW) == Accepted(NOW + RULES.hold_ms)
    verdict = check(req(17, 19), RULES, [], offered, NOW)
    assert verdict == Refused("offer", "the machine is not offered for all of that time")


def test_the_quota_counts_the_tenants_live_time_in_the_week() -> None:
    rules = replace(RULES, quota_ms=4 * HOUR)
    mine = [
        booked("a", 10, 13, tenant="smallco"),
        booked("b", 30, 40, Status.CANCELLED, tenant="smallco"),  # not live: not counted
        booked("c", 50, 58, tenant="other"),
    ]
    assert isinstance(check(req(20, 21), rules, mine, ALL_WEEK, NOW), Accepted)
    verdict = check(req(20, 22), rules, mine, ALL_WEEK, NOW)
    assert verdict == Refused(
        "quota", "over the quota of 4 h per week: 60 min left in the week from 2026-12-07 (UTC)"
    )
    # the next week is a new period
    assert isinstance(check(req(7 * 24 + 1, 7 * 24 + 4), rules, mine, ALL_WEEK, NOW), Accepted)


def test_a_conflict_names_the_reservation_and_offers_the_nearest_free_slots() -> None:
    existing = [booked("r1", 10, 12)]  # holds 9:45 - 12:15 with its buffers
    verdict = check(req(11, 13), RULES, existing, ALL_WEEK, NOW)
    assert isinstance(verdict, Conflict)
    assert verdict.conflicts == (("r1", (at(9.75), at(12.25))),)
    assert verdict.alternatives[0] == (at(12.25), at(14.25))
    for start, end in verdict.alternatives:
        assert isinstance(check(Request("laser-01", "smallco", start, end), RULES, existing, ALL_WEEK, NOW), Accepted)  # noqa: E501


def test_the_buffer_keeps_bookings_apart() -> None:
    existing = [booked("r1", 10, 12)]
    assert isinstance(check(req(12, 13), RULES, existing, ALL_WEEK, NOW), Conflict)
    assert isinstance(check(req(12.25, 13), RULES, existing, ALL_WEEK, NOW), Accepted)


def test_a_successor_does_not_conflict_with_what_it_replaces() -> None:
    existing = [booked("r1", 10, 12, tenant="smallco")]
    assert isinstance(check(req(10, 14, replaces="r1"), RULES, existing, ALL_WEEK, NOW), Accepted)
    assert isinstance(check(req(10, 14), RULES, existing, ALL_WEEK, NOW), Conflict)


requests = st.lists(
    st.tuples(
        st.integers(0, 95),  # start, in quarter hours of the day
        st.integers(2, 16),  # length, in quarter hours
        st.sampled_from(["smallco", "tinylab", "startup"]),
        st.booleans(),  # cancel it afterwards
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(requests, st.sampled_from([0, 15 * MIN, 30 * MIN]))
def test_accepted_requests_never_overlap_buffers_included(
    seq: list[tuple[int, int, str, bool]], buffer_ms: int
) -> None:
    """Any sequence of requests, each checked against what was accepted before (as the store
    transaction does), some cancelled again: no two live reservations of the machine
    overlap, buffers included, and every alternative offered is itself bookable."""
    rules = replace(RULES, buffer_ms=buffer_ms)
    book: list[Reservation] = []
    for n, (q, length, tenant, cancel) in enumerate(seq):
        request = Request("laser-01", tenant, MONDAY + q * 15 * MIN, MONDAY + (q + length) * 15 * MIN)  # noqa: E501
        verdict = check(request, rules, book, ALL_WEEK, NOW)
        if isinstance(verdict, Accepted):
            status = Status.CANCELLED if cancel else Status.CONFIRMED
            book.append(Reservation(str(n), "laser-01", tenant, request.start_ms, request.end_ms, status))  # noqa: E501
        elif isinstance(verdict, Conflict):
            for start, end in verdict.alternatives:
                again = check(Request("laser-01", tenant, start, end), rules, book, ALL_WEEK, NOW)
                assert isinstance(again, Accepted)
    live = [r for r in book if r.live]
    for i, a in enumerate(live):
        for b in live[i + 1 :]:
            assert not overlaps(
                (a.start_ms - buffer_ms, a.end_ms + buffer_ms), (b.start_ms, b.end_ms)
            )


# -- offers --------------------------------------------------------------------------------

EVENINGS = OfferingPolicy(weekly=(WeeklySlot(frozenset(range(5)), time(18), time(6)),))


def test_offers_are_the_policy_minus_maintenance_reservations_and_buffers() -> None:
    offered = allowed(EVENINGS, at(0), at(48))
    # weekday evenings into the next morning: Monday 0-6 h belongs to Sunday's, not offered
    assert offered == [(at(18), at(30)), (at(42), at(48))]
    free = free_slots(offered, [booked("r1", 20, 22)], 15 * MIN, maintenance=[(at(26), at(28))])
    assert free == [
        (at(18), at(19.75)),
        (at(22.25), at(26)),
        (at(28), at(30)),
        (at(42), at(48)),
    ]


def test_intervals_merge_and_subtract() -> None:
    assert merge([(5, 7), (1, 3), (3, 4), (6, 9), (10, 10)]) == [(1, 4), (5, 9)]
    assert subtract([(0, 10)], [(2, 3), (5, 12)]) == [(0, 2), (3, 5)]
    assert subtract([(0, 10), (20, 30)], [(-5, 25)]) == [(25, 30)]


# -- metering ------------------------------------------------------------------------------


def test_metering_counts_each_state_inside_the_booking_and_the_overrun() -> None:
    res = booked("r1", 10, 12)
    changes = [(at(9), State.IDLE), (at(10.25), State.RUNNING), (at(11), State.DOWN),
               (at(11.5), State.RUNNING), (at(12.5), State.IDLE)]
    usage = meter(res, changes, now_ms=at(13))
    assert usage.idle_ms == 15 * MIN
    assert usage.running_ms == 75 * MIN
    assert usage.down_ms == 30 * MIN
    assert usage.overrun_ms == 30 * MIN
    assert usage.booked_ms == 2 * HOUR
    # metered so far while it runs
    assert meter(res, changes, now_ms=at(10.5)).running_ms == 15 * MIN


def test_outcomes_active_no_show_preempted() -> None:
    rules = BookingRules()  # 15 min grace either side
    res = booked("r1", 10, 12)
    started = [(at(9), State.IDLE), (at(10.1), State.RUNNING)]
    assert outcome(res, started, at(10.2), rules) is Status.ACTIVE
    assert outcome(res, started, at(12), rules) is Status.COMPLETED
    idle = [(at(9), State.IDLE)]
    assert outcome(res, idle, at(10.2), rules) is None  # still within the grace
    assert outcome(res, idle, at(10.25), rules) is Status.NO_SHOW
    down = [(at(9), State.IDLE), (at(10), State.DOWN)]
    assert outcome(res, down, at(10.5), rules) is Status.PREEMPTED
    owner_run = [(at(8), State.RUNNING)]  # the owner's job, begun before the booking
    assert outcome(res, owner_run, at(10.5), rules) is Status.PREEMPTED
    assert outcome(replace(res, status=Status.ACTIVE), started, at(11), rules) is None

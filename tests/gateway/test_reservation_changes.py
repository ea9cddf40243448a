"""Moves and extensions in the store (issue 15, NEMO's model): a change is a successor linked to
its predecessor, checked and inserted in one transaction with the predecessor cancelled; the
rules of a change (rules/booking/change.py); and a property test: random sequences of
requests, extensions, moves, cancels and starts of use never leave two live reservations of a
machine overlapping (buffers included), and every successor's predecessor is no longer live."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pilotline.gateway.store import Store
from pilotline.gateway.store.reservations import Booked, ReservationError, Reservations
from pilotline.rules.booking import (
    LIVE,
    Accepted,
    BookingRules,
    Conflict,
    Interval,
    Refused,
    Request,
    Reservation,
    Status,
)

MIN = 60_000
QUARTER = 15 * MIN
HOUR = 60 * MIN
DAY = 24 * HOUR
MONDAY = 1_796_601_600_000  # 2026-12-07T00:00Z, a Monday
NOW = MONDAY + 8 * HOUR
RULES = BookingRules(buffer_ms=QUARTER, late_cancel_ms=2 * HOUR)
WEEK = [(NOW - DAY, NOW + 7 * DAY)]


def h(hours: float) -> int:
    return NOW + int(hours * HOUR)


def booked(book: Reservations, start_h: float, end_h: float, tenant: str = "acme",
           *, rules: BookingRules = RULES, confirm: bool = True) -> Reservation:
    answer = book.request(Request("m1", tenant, h(start_h), h(end_h)), rules, WEEK, NOW)
    assert answer.reservation is not None, answer.verdict
    if not confirm:
        return answer.reservation
    return book.confirm(answer.reservation.id, NOW, approval=False, by=tenant)


def change(book: Reservations, rid: str, start_h: float, end_h: float, now: int = NOW,
           *, rules: BookingRules = RULES, **kw: Any) -> Booked:
    return book.change(rid, h(start_h), h(end_h), now, rules=rules, offered=WEEK,
                       by="acme-app", **kw)


def refused(answer: Booked) -> str:
    assert isinstance(answer.verdict, Refused), answer.verdict
    assert answer.reservation is None
    return answer.verdict.rule


def test_an_extension_is_a_successor_and_the_predecessor_is_cancelled(store: Store) -> None:
    book = store.reservations()
    old = booked(book, 4, 5)
    answer = change(book, old.id, 4, 6)
    new = answer.reservation
    assert isinstance(answer.verdict, Accepted)
    assert new is not None
    assert (new.start_ms, new.end_ms, new.status, new.predecessor, new.hold_until_ms) == (
        h(4), h(6), Status.CONFIRMED, old.id, None
    )
    assert book.get(new.id) == new
    gone = book.get(old.id)
    assert gone is not None
    assert (gone.status, gone.start_ms, gone.end_ms) == (Status.CANCELLED, h(4), h(5))
    assert book.events(old.id)[-1] == (Status.CANCELLED, NOW, "acme-app", f"extended to {new.id}")
    assert book.events(new.id) == [(Status.CONFIRMED, NOW, "acme-app", f"extended from {old.id}")]
    assert book.successors([old.id, new.id]) == {old.id: new.id}
    # a moved one says so, and the chain goes on
    moved = change(book, new.id, 8, 10).reservation
    assert moved is not None
    assert book.events(new.id)[-1][3] == f"moved to {moved.id}"
    assert [r.id for r in book.list() if r.live] == [moved.id]


def test_a_change_into_another_booking_conflicts_and_changes_nothing(store: Store) -> None:
    book = store.reservations()
    mine = booked(book, 4, 5)
    theirs = booked(book, 6, 7, "globex")
    answer = change(book, mine.id, 4, 6)  # 6 h + its buffer clashes with theirs
    assert isinstance(answer.verdict, Conflict)
    assert [rid for rid, _ in answer.verdict.conflicts] == [theirs.id]
    assert book.get(mine.id) == mine
    assert book.successors([mine.id]) == {}
    # up to the buffer is fine
    assert change(book, mine.id, 4, 5.75).reservation is not None


def test_the_rules_still_hold_and_the_quota_counts_the_successor_only(store: Store) -> None:
    book = store.reservations()
    rules = BookingRules(quota_ms=4 * HOUR, late_cancel_ms=0)
    old = booked(book, 4, 7, rules=rules)
    booked(book, 20, 21, rules=rules)  # the quota of 4 h is used up
    short = BookingRules(max_length_ms=3 * HOUR, late_cancel_ms=0)
    assert refused(change(book, old.id, 4, 8, rules=short)) == "length"
    assert refused(change(book, old.id, 4, 7.1, rules=rules)) == "step"
    # a move of its 3 h does not count them twice
    moved = change(book, old.id, 30, 33, rules=rules).reservation
    assert moved is not None
    assert refused(change(book, moved.id, 30, 33.25, rules=rules)) == "quota"


def test_a_held_one_gets_a_fresh_hold_and_approval_asks_again(store: Store) -> None:
    book = store.reservations()
    held = booked(book, 4, 5, confirm=False)
    later = NOW + 5 * MIN
    new = change(book, held.id, 4, 6, later).reservation
    assert new is not None
    assert (new.status, new.hold_until_ms) == (Status.HELD, later + 10 * MIN)
    confirmed = booked(book, 10, 11)
    asked = change(book, confirmed.id, 10, 12, approval=True).reservation
    assert asked is not None
    assert asked.status is Status.REQUESTED
    again = change(book, asked.id, 10, 13, approval=True).reservation
    assert again is not None
    assert again.status is Status.REQUESTED


def test_an_active_booking_is_extended_not_moved(store: Store) -> None:
    book = store.reservations()
    old = booked(book, 1, 2)
    later = h(1.5)
    book.settle([(old.id, Status.CONFIRMED, Status.ACTIVE, "running")], later)
    # its start is in the past: it keeps it without notice
    new = change(book, old.id, 1, 3, later).reservation
    assert new is not None
    assert new.status is Status.ACTIVE
    assert refused(change(book, new.id, 1.5, 3, later)) == "active"
    assert refused(change(book, new.id, 1, 2.5, later)) == "late_cancel"  # shortening
    assert refused(change(book, new.id, 1, 1.25, later)) == "notice"  # ends in the past
    assert refused(change(book, new.id, 1, 4, later, approval=True)) == "approval"


def test_close_to_its_start_a_booking_can_only_grow(store: Store) -> None:
    book = store.reservations()
    old = booked(book, 1, 3)  # late_cancel: 2 h before the start
    assert refused(change(book, old.id, 1, 2)) == "late_cancel"
    assert refused(change(book, old.id, 5, 7)) == "late_cancel"
    assert change(book, old.id, 0.5, 3.5).reservation is not None
    # further ahead, a booking may shrink or move
    far = booked(book, 10, 12)
    assert change(book, far.id, 10, 11).reservation is not None


def test_time_it_holds_stays_granted_when_the_offer_shrinks(store: Store) -> None:
    book = store.reservations()
    old = booked(book, 4, 6)
    # maintenance planned since: [4 h, 6 h) is no longer offered, but it is this booking's
    now_offered = [(h(6), h(8))]
    kept = book.change(old.id, h(4), h(7), NOW, rules=RULES, offered=now_offered, by="x")
    assert kept.reservation is not None
    assert refused(book.change(kept.reservation.id, h(4), h(9), NOW, rules=RULES,
                               offered=now_offered, by="x")) == "offer"


def test_a_retry_with_the_same_key_gets_the_same_successor(store: Store) -> None:
    book = store.reservations()
    old = booked(book, 4, 5)
    first = change(book, old.id, 4, 6, key="k1")
    retry = change(book, old.id, 4, 6, key="k1")
    assert first.reservation is not None
    assert (retry.reservation, retry.replayed) == (first.reservation, True)
    assert refused(change(book, old.id, 4, 7, key="k1")) == "idempotency"
    with pytest.raises(ReservationError, match="is cancelled: only a live reservation can change"):
        change(book, old.id, 4, 7)
    with pytest.raises(ReservationError, match="no reservation r_nope"):
        change(book, "r_nope", 4, 7)
    assert len([r for r in book.list() if r.live]) == 1


def test_threads_changing_two_bookings_into_one_gap_let_exactly_one_win(tmp_path: Path) -> None:
    """Each thread has its own connection on one file (as the 100-thread request race): half
    extend the first booking into the gap, half move the second's start into it, every pair
    overlapping. One BEGIN IMMEDIATE transaction from the read to the insert lets one win."""
    path = tmp_path / "store.db"
    with Store(path) as store:
        first, second = booked(store.reservations(), 2, 3), booked(store.reservations(), 6, 7)
    threads = 40
    start = threading.Barrier(threads)
    answers: list[object] = []
    failures: list[BaseException] = []

    def race(i: int) -> None:
        k = i // 2 % 4
        try:
            with Store(path) as store:
                start.wait(timeout=60)
                try:
                    if i % 2 == 0:  # ends at 4:15 to 5:00
                        got = change(store.reservations(), first.id, 2, 4.25 + k / 4)
                    else:  # starts at 4:00 to 3:15 (the buffer: 15 min)
                        got = change(store.reservations(), second.id, 4 - k / 4, 7)
                    answers.append(got.verdict)
                except ReservationError as exc:  # its booking was changed by a rival
                    answers.append(exc)
        except BaseException as exc:  # noqa: BLE001 (the test reports it)
            failures.append(exc)

    workers = [threading.Thread(target=race, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert failures == []
    assert sum(isinstance(a, Accepted) for a in answers) == 1
    assert all(isinstance(a, Accepted | Conflict | ReservationError) for a in answers)
    with Store(path) as store:
        check_invariants(store.reservations(), RULES.buffer_ms)
        assert len(store.reservations().list(statuses=LIVE)) == 2


# -- the property: no overlap, whatever the sequence ----------------------------------------

TENANTS = ("acme", "globex", "initech")
_ops = st.one_of(
    st.tuples(st.just("book"), st.sampled_from(TENANTS), st.integers(0, 40), st.integers(1, 8),
              st.booleans()),
    st.tuples(st.just("extend"), st.integers(0, 50), st.integers(-4, 8)),
    st.tuples(st.just("move"), st.integers(0, 50), st.integers(-8, 8)),
    st.tuples(st.just("cancel"), st.integers(0, 50)),
    st.tuples(st.just("use"), st.integers(0, 50)),
    st.tuples(st.just("wait"), st.integers(1, 6)),
)
_runs = itertools.count()


def check_invariants(book: Reservations, buffer_ms: int) -> None:
    every = book.list()
    live = sorted((r for r in every if r.live), key=lambda r: r.start_ms)
    for a, b in itertools.pairwise(live):
        assert b.start_ms - a.end_ms >= buffer_ms, (a, b)
    by_id = {r.id: r for r in every}
    for r in every:
        if r.predecessor is not None:
            assert by_id[r.predecessor].status is Status.CANCELLED, (r, by_id[r.predecessor])
    successors = book.successors(list(by_id))
    assert all(by_id[p].status not in LIVE for p in successors)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_ops, max_size=40))
def test_random_changes_never_overlap_and_every_successor_replaces_a_dead_predecessor(
    tmp_path: Path, ops: list[tuple[Any, ...]],
) -> None:
    rules = BookingRules(buffer_ms=QUARTER, late_cancel_ms=HOUR, min_notice_ms=0)
    offered: list[Interval] = [(NOW - DAY, NOW + 2 * DAY)]
    with Store(tmp_path / f"run-{next(_runs)}.db") as store:
        book = store.reservations()
        now = NOW
        ids: list[str] = []
        for op in ops:
            kind = op[0]
            if kind == "wait":
                now += op[1] * QUARTER
            elif kind == "book":
                _, tenant, start_q, len_q, confirm = op
                start = NOW + start_q * QUARTER
                end = start + len_q * QUARTER
                got = book.request(Request("m1", tenant, start, end), rules, offered, now)
                if got.reservation is not None:
                    ids.append(got.reservation.id)
                    if confirm:
                        book.confirm(got.reservation.id, now, approval=False, by="t")
            elif ids:
                res = book.get(ids[op[1] % len(ids)])
                assert res is not None
                if kind == "cancel" and res.status in (Status.HELD, Status.REQUESTED,
                                                       Status.CONFIRMED):
                    book.cancel(res.id, now, "t")
                elif kind == "use" and res.status is Status.CONFIRMED and res.start_ms <= now:
                    book.settle([(res.id, Status.CONFIRMED, Status.ACTIVE, "running")], now)
                elif kind in ("extend", "move") and res.live:
                    delta = op[2] * QUARTER
                    start = res.start_ms + (delta if kind == "move" else 0)
                    end = res.end_ms + delta
                    try:
                        got = book.change(res.id, start, end, now, rules=rules,
                                          offered=offered, by="t")
                    except ReservationError:  # a hold that ran out meanwhile
                        assert res.status is Status.HELD
                        assert res.hold_until_ms is not None
                        assert res.hold_until_ms <= now
                        continue
                    if got.reservation is not None:
                        ids.append(got.reservation.id)
                else:
                    continue
            check_invariants(book, rules.buffer_ms)

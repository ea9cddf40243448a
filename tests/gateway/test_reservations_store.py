"""The reservations family of the store (issue 15) on real SQLite files: the lifecycle,
idempotency keys, holds that expire, freed time, and no double booking whatever the
concurrency (threads with a connection each, and processes, on one file)."""

from __future__ import annotations

import itertools
import multiprocessing
import random
import re
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from pilotline.gateway.store import SCHEMA_VERSION, Store
from pilotline.gateway.store import reservations as store_reservations
from pilotline.gateway.store.reservations import ReservationError
from pilotline.rules.booking import (
    LIVE,
    Accepted,
    BookingRules,
    Conflict,
    Refused,
    Request,
    Status,
    Verdict,
)

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
MONDAY = 1_796_601_600_000  # 2026-12-07T00:00Z, a Monday
NOW = MONDAY + 8 * HOUR
RULES = BookingRules()  # 15 min grid, at least 15 min, a 10 min hold, no buffer
WEEK = [(NOW, NOW + 7 * DAY)]


def ask(start_h: float, end_h: float, tenant: str = "acme", machine: str = "m1") -> Request:
    """A request for ``[NOW + start_h, NOW + end_h)`` hours."""
    return Request(machine, tenant, NOW + int(start_h * HOUR), NOW + int(end_h * HOUR))


def test_the_lifecycle_moves_only_the_status_and_records_every_move(store: Store) -> None:
    book = store.reservations()
    booked = book.request(ask(2, 3), RULES, WEEK, NOW, purpose="first article")
    assert booked.verdict == Accepted(NOW + 10 * MIN)
    held = booked.reservation
    assert held is not None
    assert held.id.startswith("r_")
    assert (held.status, held.hold_until_ms, held.purpose) == (
        Status.HELD, NOW + 10 * MIN, "first article"
    )
    assert book.get(held.id) == held

    confirmed = book.confirm(held.id, NOW + MIN, approval=False, by="acme-app")
    assert confirmed.status is Status.CONFIRMED
    assert book.get(held.id) == confirmed
    cancelled = book.cancel(held.id, NOW + 2 * MIN, "acme-app", "plans changed")
    assert cancelled.status is Status.CANCELLED
    assert book.events(held.id) == [
        (Status.HELD, NOW, "acme", ""),
        (Status.CONFIRMED, NOW + MIN, "acme-app", ""),
        (Status.CANCELLED, NOW + 2 * MIN, "acme-app", "plans changed"),
    ]
    # everything but the status is as it was written
    row = store._rows("SELECT * FROM reservations WHERE id = ?", (held.id,))[0]
    assert row == {
        "id": held.id, "machine": "m1", "tenant": "acme", "start_ms": NOW + 2 * HOUR,
        "end_ms": NOW + 3 * HOUR, "status": "cancelled", "created_ms": NOW,
        "predecessor": None, "purpose": "first article", "hold_until_ms": NOW + 10 * MIN,
        "updated_ms": NOW + 2 * MIN,
    }
    with pytest.raises(ReservationError, match="is cancelled: only a confirmed or held or "
                                               "requested reservation can become cancelled"):
        book.cancel(held.id, NOW + 3 * MIN, "acme-app")
    with pytest.raises(ReservationError, match="no reservation r_nope"):
        book.confirm("r_nope", NOW, approval=False, by="x")


def test_approval_puts_a_confirmed_hold_before_the_owner(store: Store) -> None:
    book = store.reservations()
    first = book.request(ask(2, 3), RULES, WEEK, NOW).reservation
    second = book.request(ask(4, 5), RULES, WEEK, NOW).reservation
    assert first is not None
    assert second is not None
    assert book.confirm(first.id, NOW, approval=True, by="acme").status is Status.REQUESTED
    with pytest.raises(ReservationError, match="only a held reservation can become requested"):
        book.confirm(first.id, NOW, approval=True, by="acme")
    assert book.approve(first.id, NOW + MIN, by="owner").status is Status.CONFIRMED
    book.confirm(second.id, NOW, approval=True, by="acme")
    assert book.reject(second.id, NOW + MIN, by="owner", note="shop closed").status is (
        Status.REJECTED
    )
    with pytest.raises(ReservationError, match="only a requested reservation can become"):
        book.approve(second.id, NOW + 2 * MIN, by="owner")
    # a rejected reservation no longer holds its time
    assert isinstance(book.request(ask(4, 5), RULES, WEEK, NOW + MIN).verdict, Accepted)


def test_a_retry_with_the_same_key_gets_the_same_reservation(store: Store) -> None:
    book = store.reservations()
    first = book.request(ask(2, 3), RULES, WEEK, NOW, key="k-1", purpose="p")
    again = book.request(ask(2, 3), RULES, WEEK, NOW + MIN, key="k-1", purpose="p")
    assert first.reservation is not None
    assert (again.reservation, again.replayed, first.replayed) == (first.reservation, True, False)
    assert isinstance(again.verdict, Accepted)
    assert len(book.list()) == 1
    # what the retry answers is the reservation as it is now
    book.confirm(first.reservation.id, NOW + 2 * MIN, approval=False, by="acme")
    later = book.request(ask(2, 3), RULES, WEEK, NOW + 3 * MIN, key="k-1", purpose="p")
    assert later.reservation is not None
    assert later.reservation.status is Status.CONFIRMED


def test_a_reused_key_with_another_request_is_refused(store: Store) -> None:
    book = store.reservations()
    book.request(ask(2, 3), RULES, WEEK, NOW, key="k-1")
    other = book.request(ask(5, 6), RULES, WEEK, NOW, key="k-1")
    assert other.reservation is None
    assert isinstance(other.verdict, Refused)
    assert other.verdict.rule == "idempotency"
    assert "already used for a different request" in other.verdict.message
    assert len(book.list()) == 1
    # keys are per tenant: another company's k-1 is its own
    assert book.request(ask(5, 6, "globex"), RULES, WEEK, NOW, key="k-1").reservation is not None
    too_long = book.request(ask(7, 8), RULES, WEEK, NOW, key="k" * 256)
    assert isinstance(too_long.verdict, Refused)
    assert too_long.verdict.rule == "idempotency"


def test_holds_expire_and_a_due_hold_blocks_nothing(store: Store) -> None:
    book = store.reservations()
    first = book.request(ask(2, 3), RULES, WEEK, NOW).reservation
    second = book.request(ask(4, 5), RULES, WEEK, NOW + MIN).reservation
    assert first is not None
    assert second is not None
    assert book.expire_holds(NOW + 10 * MIN - 1) == []
    assert book.expire_holds(NOW + 10 * MIN) == [first.id]
    assert book.get(first.id).status is Status.EXPIRED  # type: ignore[union-attr]
    assert book.events(first.id)[-1] == (Status.EXPIRED, NOW + 10 * MIN, "pilotline",
                                         "hold ran out")
    with pytest.raises(ReservationError, match="is expired"):
        book.confirm(first.id, NOW + 10 * MIN, approval=False, by="acme")
    # the second hold is due at NOW + 11 min: a confirmation then comes too late, and a new
    # request for its slot is accepted even though nobody ran expire_holds
    taken = book.request(ask(4, 5, "globex"), RULES, WEEK, NOW + 11 * MIN)
    assert isinstance(taken.verdict, Accepted)
    assert book.get(second.id).status is Status.EXPIRED  # type: ignore[union-attr]
    with pytest.raises(ReservationError, match="is expired"):
        book.confirm(second.id, NOW + 11 * MIN, approval=False, by="acme")


def test_a_cancelled_reservation_frees_its_time(store: Store) -> None:
    book = store.reservations()
    first = book.request(ask(2, 3), RULES, WEEK, NOW).reservation
    assert first is not None
    book.confirm(first.id, NOW, approval=False, by="acme")
    clash = book.request(ask(2.5, 3.5, "globex"), RULES, WEEK, NOW + MIN)
    assert isinstance(clash.verdict, Conflict)
    assert [rid for rid, _ in clash.verdict.conflicts] == [first.id]
    book.cancel(first.id, NOW + 2 * MIN, "acme")
    freed = book.request(ask(2.5, 3.5, "globex"), RULES, WEEK, NOW + 3 * MIN)
    assert isinstance(freed.verdict, Accepted)


def test_alternatives_avoid_reservations_beyond_the_requested_slot(store: Store) -> None:
    """The alternatives a conflict proposes are checked against the whole offered span, not
    only the reservations next to the request."""
    book = store.reservations()
    rules = BookingRules(buffer_ms=15 * MIN)
    for start in (2, 3.5):  # busy 1:45-3:15 and 3:15-4:45 with their buffers
        assert isinstance(book.request(ask(start, start + 1), rules, WEEK, NOW).verdict, Accepted)
    clash = book.request(ask(2, 3, "globex"), rules, WEEK, NOW)
    assert isinstance(clash.verdict, Conflict)
    for start, end in clash.verdict.alternatives:
        request = Request("m1", "globex", start, end)
        assert isinstance(book.request(request, rules, WEEK, NOW).verdict, Accepted)


def test_the_quota_counts_the_tenants_bookings_of_the_whole_period(store: Store) -> None:
    book = store.reservations()
    rules = BookingRules(quota_ms=2 * HOUR)
    monday = [(NOW, NOW + 10 * HOUR)]
    wednesday = [(NOW + 2 * DAY, NOW + 2 * DAY + 10 * HOUR)]
    assert isinstance(book.request(ask(2, 3.5), rules, monday, NOW).verdict, Accepted)
    over = book.request(ask(50, 51), rules, wednesday, NOW)
    assert isinstance(over.verdict, Refused)
    assert over.verdict.rule == "quota"
    assert isinstance(book.request(ask(50, 50.5), rules, wednesday, NOW).verdict, Accepted)


def test_a_move_names_its_predecessor_and_may_overlap_it(store: Store) -> None:
    book = store.reservations()
    old = book.request(ask(2, 3), RULES, WEEK, NOW).reservation
    assert old is not None
    move = Request("m1", "acme", NOW + int(2.5 * HOUR), NOW + int(3.5 * HOUR), replaces=old.id)
    moved = book.request(move, RULES, WEEK, NOW)
    assert moved.reservation is not None
    assert moved.reservation.predecessor == old.id
    stranger = Request("m1", "globex", NOW + 6 * HOUR, NOW + 7 * HOUR, replaces=old.id)
    refused = book.request(stranger, RULES, WEEK, NOW)
    assert isinstance(refused.verdict, Refused)
    assert refused.verdict.rule == "replaces"


def test_list_filters_by_machine_tenant_time_and_status(store: Store) -> None:
    book = store.reservations()
    a = book.request(ask(2, 3), RULES, WEEK, NOW).reservation
    b = book.request(ask(4, 5, "globex"), RULES, WEEK, NOW).reservation
    c = book.request(ask(2, 3, machine="m2"), RULES, WEEK, NOW).reservation
    assert a is not None
    assert b is not None
    assert c is not None
    book.cancel(c.id, NOW, "acme")
    by_start = sorted([a, book.get(c.id), b], key=lambda r: (r.start_ms, r.id))  # type: ignore[union-attr]
    assert book.list() == by_start
    assert book.list(machine="m1") == [a, b]
    assert book.list(tenant="globex") == [b]
    assert book.list(from_ms=NOW + 3 * HOUR) == [b]
    assert book.list(to_ms=NOW + 2 * HOUR) == []
    assert book.list(statuses=LIVE) == [a, b]
    assert book.list(statuses=()) == []


def test_reservations_survive_a_restart_and_an_older_file_gets_the_tables(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with Store(path) as store:
        held = store.reservations().request(ask(2, 3), RULES, WEEK, NOW, key="k").reservation
        store._db.execute("DROP TABLE idempotency")  # as a version 7 file has no such table
        store._db.execute("UPDATE schema_version SET version = 7")
    with Store(path) as store:
        assert store.reservations().get(held.id) == held  # type: ignore[union-attr]
        version = store._rows("SELECT version FROM schema_version")[0]["version"]
        assert version == SCHEMA_VERSION == 9
        again = store.reservations().request(ask(4, 5), RULES, WEEK, NOW, key="k")
        assert again.reservation is not None
        assert not again.replayed  # the key went with the dropped table


# -- concurrency -----------------------------------------------------------------------------


def test_100_threads_racing_for_one_slot_get_exactly_one_reservation(tmp_path: Path) -> None:
    """Each thread has its own connection (a Store without the gateway's lock) on one file,
    and all ask at once for overlapping hours of one machine."""
    path = tmp_path / "store.db"
    Store(path).close()
    threads = 100
    start = threading.Barrier(threads)
    verdicts: list[object] = []
    failures: list[BaseException] = []

    def race(i: int) -> None:
        try:
            with Store(path) as store:
                start.wait(timeout=60)
                # every pair overlaps: starts within 45 min, an hour each
                request = ask(2 + (i % 4) / 4, 3 + (i % 4) / 4, tenant=f"t{i}")
                verdicts.append(store.reservations().request(request, RULES, WEEK, NOW).verdict)
        except BaseException as exc:  # noqa: BLE001 (the test reports it)
            failures.append(exc)

    workers = [threading.Thread(target=race, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert failures == []
    assert sum(isinstance(v, Accepted) for v in verdicts) == 1
    assert sum(isinstance(v, Conflict) for v in verdicts) == threads - 1
    with Store(path) as store:
        assert len(store.reservations().list(statuses=LIVE)) == 1


def test_no_writer_comes_between_the_check_and_the_insert(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rival request for the same hour is let in at the worst moments: while the first is
    being checked, and whenever the first, having read the machine's reservations, is
    outside a transaction. Only one transaction from that read to the insert keeps the rival
    out (it waits for the write lock, then sees a conflict)."""
    path = tmp_path / "store.db"
    first = Store(path)
    verdicts: dict[str, object] = {}
    rival: list[threading.Thread] = []
    has_read = False

    def rival_asks() -> None:
        with Store(path) as other:
            request = ask(2.5, 3.5, tenant="globex")
            verdicts["rival"] = other.reservations().request(request, RULES, WEEK, NOW).verdict

    def let_rival_in(wait_s: float) -> None:
        if not rival:
            rival.append(threading.Thread(target=rival_asks))
            rival[0].start()
        rival[0].join(timeout=wait_s)  # done by then, unless the first's write lock holds it

    real_check = store_reservations.check

    first_thread = threading.current_thread()

    def checking(*args: Any) -> Verdict:
        if threading.current_thread() is first_thread:  # not the rival's own check
            let_rival_in(0.5)
        return real_check(*args)

    def traced(sql: str) -> None:
        nonlocal has_read
        if has_read and not first._db.in_transaction:
            let_rival_in(5)
        if re.search(r"FROM reservations\b", sql):
            has_read = True

    monkeypatch.setattr(store_reservations, "check", checking)
    first._db.set_trace_callback(traced)
    try:
        verdicts["first"] = first.reservations().request(ask(2, 3), RULES, WEEK, NOW).verdict
    finally:
        first._db.set_trace_callback(None)
        first.close()
    rival[0].join(timeout=10)
    assert [type(verdicts["first"]), type(verdicts["rival"])] == [Accepted, Conflict]


BUFFERED = BookingRules(buffer_ms=15 * MIN, hold_ms=HOUR)


def hammer(path: str, seed: int, rounds: int) -> int:
    """A process's share of the race: random requests, confirmations and cancellations."""
    rng = random.Random(seed)
    accepted = 0
    with Store(Path(path)) as store:
        book = store.reservations()
        mine: list[str] = []
        for _ in range(rounds):
            start = rng.randrange(8 * 4, 20 * 4) * 15 * MIN  # 8:00-20:00, 15 min grid
            length = rng.randrange(1, 9) * 15 * MIN
            request = Request("m1", f"p{seed}", NOW + start, NOW + start + length)
            booked = book.request(request, BUFFERED, WEEK, NOW)
            if booked.reservation is not None:
                accepted += 1
                mine.append(booked.reservation.id)
                book.confirm(booked.reservation.id, NOW, approval=False, by="p")
            if mine and rng.random() < 0.3:
                book.cancel(mine.pop(rng.randrange(len(mine))), NOW, "p")
    return accepted


def test_two_processes_never_book_overlapping_time(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    Store(path).close()
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        accepted = pool.starmap(hammer, [(str(path), 1, 300), (str(path), 2, 300)])
    assert all(n > 0 for n in accepted)  # both got some, so they did race
    db = sqlite3.connect(path)
    marks = ", ".join("?" * len(LIVE))
    live = db.execute(
        f"SELECT start_ms, end_ms FROM reservations WHERE status IN ({marks}) ORDER BY start_ms",
        [s.value for s in LIVE],
    ).fetchall()
    db.close()
    assert len(live) > 1
    # a live reservation's buffer keeps the next one away
    for (_, end), (start, _) in itertools.pairwise(live):
        assert end + BUFFERED.buffer_ms <= start

"""The bookings' lifecycle (issue 15): the pure ``transitions`` on synthetic timelines, the
store's ``settle`` (one transaction, a reservation moved meanwhile left alone), and a real
gateway on a fake clock where one machine runs inside its booking and another never starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.fakes import T0, Clock
from tests.sites import UNIT_DEFAULTS, machine_config, site_yaml

from pilotline.collectors.mqtt.collector import AckToken
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway
from pilotline.gateway.service.bookings import Transition, transitions
from pilotline.gateway.sinks.influx.writer import MemoryWriter
from pilotline.gateway.store import Store
from pilotline.rules import Sample
from pilotline.rules.booking import BookingRules, Request, Reservation, Status
from pilotline.rules.booking.metering import Change
from pilotline.rules.states import State

MIN = 60_000
HOUR = 60 * MIN
START = T0 + 2 * HOUR
END = START + HOUR
RULES = BookingRules()  # 15 min early grace, 15 min no-show grace


def booking(status: Status = Status.CONFIRMED, rid: str = "r1", machine: str = "m1") -> Reservation:
    return Reservation(rid, machine, "tenant-a", START, END, status)


def moves(res: Reservation, changes: list[Change], now: int) -> list[tuple[Status, Status]]:
    found = transitions([res], {res.machine: changes}, now, lambda _: RULES)
    assert all(t.reservation is res for t in found)
    return [(t.start, t.to) for t in found]


IDLE_BEFORE: list[Change] = [(T0, State.IDLE)]


def test_running_inside_the_grace_makes_it_active() -> None:
    runs = [*IDLE_BEFORE, (START + 5 * MIN, State.RUNNING)]
    assert moves(booking(), runs, START + 4 * MIN) == []  # not yet
    assert moves(booking(), runs, START + 6 * MIN) == [(Status.CONFIRMED, Status.ACTIVE)]
    early = [*IDLE_BEFORE, (START - 10 * MIN, State.RUNNING)]  # inside the early grace
    assert moves(booking(), early, START - 5 * MIN) == [(Status.CONFIRMED, Status.ACTIVE)]


def test_idle_past_the_grace_is_a_no_show() -> None:
    assert moves(booking(), IDLE_BEFORE, START + 14 * MIN) == []
    assert moves(booking(), IDLE_BEFORE, START + 15 * MIN) == [
        (Status.CONFIRMED, Status.NO_SHOW)
    ]
    late = [*IDLE_BEFORE, (START + 20 * MIN, State.RUNNING)]  # after the grace: too late
    assert moves(booking(), late, START + 30 * MIN) == [(Status.CONFIRMED, Status.NO_SHOW)]


def test_a_machine_down_is_preempted() -> None:
    down = [*IDLE_BEFORE, (START - MIN, State.DOWN)]
    found = transitions([booking()], {"m1": down}, START + 15 * MIN, lambda _: RULES)
    assert [(t.to, t.note) for t in found] == [
        (Status.PREEMPTED, "not usable by the end of the no-show grace: down")
    ]
    # a machine never heard of counts as offline: preempted too
    assert moves(booking(), [], START + 15 * MIN) == [(Status.CONFIRMED, Status.PREEMPTED)]


def test_the_owners_run_begun_before_the_early_grace_preempts_it() -> None:
    owners = [*IDLE_BEFORE, (START - 20 * MIN, State.RUNNING)]
    assert moves(booking(), owners, START + 10 * MIN) == []
    found = transitions([booking()], {"m1": owners}, START + 15 * MIN, lambda _: RULES)
    assert [(t.to, t.note) for t in found] == [
        (Status.PREEMPTED, "not usable by the end of the no-show grace: running its owner's job")
    ]


def test_active_becomes_completed_at_its_end() -> None:
    runs = [*IDLE_BEFORE, (START, State.RUNNING), (START + 30 * MIN, State.IDLE)]
    assert moves(booking(Status.ACTIVE), runs, END - 1) == []
    assert moves(booking(Status.ACTIVE), runs, END) == [(Status.ACTIVE, Status.COMPLETED)]
    # found only after its end (the gateway was down): both steps, in order
    assert moves(booking(), runs, END + HOUR) == [
        (Status.CONFIRMED, Status.ACTIVE),
        (Status.ACTIVE, Status.COMPLETED),
    ]


def test_other_statuses_and_other_machines_do_not_move() -> None:
    runs = {"m1": [*IDLE_BEFORE, (START, State.RUNNING)], "m2": IDLE_BEFORE}
    others = [booking(s, f"r-{s.value}") for s in Status if s not in (
        Status.CONFIRMED, Status.ACTIVE)]
    assert transitions(others, runs, END + HOUR, lambda _: RULES) == []
    # each booking is decided on its own machine's states
    found = transitions(
        [booking(rid="a"), booking(rid="b", machine="m2")], runs, START + 15 * MIN,
        lambda _: RULES,
    )
    assert [(t.reservation.id, t.to) for t in found] == [
        ("a", Status.ACTIVE), ("b", Status.NO_SHOW)
    ]
    assert all(isinstance(t, Transition) for t in found)


# -- the store's settle ----------------------------------------------------------------------

OFFERED = [(T0, T0 + 24 * HOUR)]


def confirmed(store: Store, start: int, machine: str = "m1") -> Reservation:
    book = store.reservations()
    booked = book.request(Request(machine, "tenant-a", start, start + HOUR), RULES, OFFERED, T0)
    assert booked.reservation is not None
    return book.confirm(booked.reservation.id, T0, approval=False, by="tenant-a")


def test_settle_expires_holds_and_moves_in_one_go_leaving_what_moved_meanwhile(
    store: Store,
) -> None:
    book = store.reservations()
    used = confirmed(store, START)
    cancelled = confirmed(store, START + 2 * HOUR)
    book.cancel(cancelled.id, T0 + MIN, by="tenant-a")
    held = book.request(Request("m2", "tenant-a", START, END), RULES, OFFERED, T0).reservation
    assert held is not None
    expired, moved = book.settle(
        [
            (used.id, Status.CONFIRMED, Status.ACTIVE, "running"),
            (cancelled.id, Status.CONFIRMED, Status.NO_SHOW, "idle"),  # cancelled since read
        ],
        T0 + HOUR,
    )
    assert expired == [held.id]
    assert [(r.id, r.status, note) for r, note in moved] == [(used.id, Status.ACTIVE, "running")]
    assert book.events(used.id)[-1] == (Status.ACTIVE, T0 + HOUR, "pilotline", "running")
    assert book.get(cancelled.id).status is Status.CANCELLED  # type: ignore[union-attr]
    assert book.get(held.id).status is Status.EXPIRED  # type: ignore[union-attr]


# -- a real gateway on a fake clock ----------------------------------------------------------


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(
        site_yaml(
            {"photonics": [machine_config("laser-01"), machine_config("laser-02")]},
            store=tmp_path / "gw.db",
            defaults={**UNIT_DEFAULTS, "stale_after_s": 3600, "publish_interval_s": 600},
        )
    )
    return path


_delivery = iter(range(1, 1_000_000))


def sample(gateway: Gateway, machine: str, ts: int, state: str) -> None:
    n = next(_delivery)
    gateway.ingest.sample(Sample(machine, ts, {"state": state}), AckToken(1, n, n))


def test_a_gateway_meters_a_booking_used_and_one_never_started(config_path: Path) -> None:
    clock = Clock()
    gateway = Gateway(
        load_config(config_path), writer=MemoryWriter(), clock_ms=clock,
        monotonic_ms=clock.monotonic,
    )
    gateway.caught_up = True
    book = gateway.store.reservations()
    used = confirmed(gateway.store, START, "laser-01")
    missed = confirmed(gateway.store, START, "laser-02")

    def at(ts: int, states: dict[str, str]) -> None:
        clock.set(ts)
        for machine, state in states.items():
            sample(gateway, machine, ts, state)
        gateway.tick()
        gateway.commit()
        gateway.bookings.settle()

    both_idle = {"laser-01": "NotExecuting", "laser-02": "NotExecuting"}
    for ts in range(T0, START, 10 * MIN):
        at(ts, both_idle)
    assert {book.get(r.id).status for r in (used, missed)} == {Status.CONFIRMED}  # type: ignore[union-attr]
    at(START + 5 * MIN, {"laser-01": "Executing", "laser-02": "NotExecuting"})
    assert book.get(used.id).status is Status.ACTIVE  # type: ignore[union-attr]
    for ts in range(START + 10 * MIN, END + 10 * MIN, 5 * MIN):
        at(ts, {"laser-01": "Executing" if ts < END - 10 * MIN else "NotExecuting",
                "laser-02": "NotExecuting"})
    assert book.get(used.id).status is Status.COMPLETED  # type: ignore[union-attr]
    assert book.get(missed.id).status is Status.NO_SHOW  # type: ignore[union-attr]
    assert [s for s, *_ in book.events(used.id)] == [
        Status.HELD, Status.CONFIRMED, Status.ACTIVE, Status.COMPLETED
    ]
    usage = gateway.bookings.usage(used.id)
    assert usage is not None
    assert (usage.running_ms, usage.idle_ms, usage.overrun_ms) == (
        45 * MIN, 15 * MIN, 0
    )
    assert gateway.bookings.usage("r_none") is None
    gateway.store.close()


def test_before_the_backlog_is_in_no_booking_moves_but_holds_expire(config_path: Path) -> None:
    clock = Clock(START + 20 * MIN)  # restarted after the grace, the broker's backlog pending
    gateway = Gateway(
        load_config(config_path), writer=MemoryWriter(), clock_ms=clock,
        monotonic_ms=clock.monotonic,
    )
    gateway.caught_up = False
    book = gateway.store.reservations()
    waiting = confirmed(gateway.store, START, "laser-01")
    held = book.request(
        Request("laser-02", "tenant-a", START + HOUR, END + HOUR), RULES, OFFERED, T0
    ).reservation
    assert held is not None
    assert gateway.bookings.settle() == []
    assert book.get(waiting.id).status is Status.CONFIRMED  # type: ignore[union-attr]
    assert book.get(held.id).status is Status.EXPIRED  # type: ignore[union-attr]
    # the backlog brings the run that began inside the grace
    sample(gateway, "laser-01", START + 5 * MIN, "Executing")
    gateway.commit()
    gateway.caught_up = True
    assert [t.to for t in gateway.bookings.settle()] == [Status.ACTIVE]
    gateway.store.close()


def test_a_run_not_yet_committed_is_seen_by_the_lifecycle(config_path: Path) -> None:
    """A run that began and ended inside the grace, staged but not yet committed when the
    lifecycle runs (the committer is a separate task), is the tenant's use: the lifecycle
    commits what is staged first, so the booking is ``active``, never a ``no_show``."""
    clock = Clock(T0)
    gateway = Gateway(
        load_config(config_path), writer=MemoryWriter(), clock_ms=clock,
        monotonic_ms=clock.monotonic,
    )
    gateway.caught_up = True
    used = confirmed(gateway.store, START, "laser-01")
    sample(gateway, "laser-01", T0, "NotExecuting")
    gateway.commit()
    for minutes, state in ((2, "Executing"), (4, "NotExecuting"), (20, "NotExecuting")):
        clock.set(START + minutes * MIN)  # 20: past the no-show grace
        sample(gateway, "laser-01", START + minutes * MIN, state)
        gateway.tick()

    assert [t.to for t in gateway.bookings.settle()] == [Status.ACTIVE]
    assert gateway.store.reservations().get(used.id).status is Status.ACTIVE  # type: ignore[union-attr]
    gateway.store.close()

"""Booking-aware capacity in the pure core (rules/booking/capacity.py): a live reservation
holds its machine over [start, end), and a held machine is offered to no one else; and the
booking measurement's status codes (rules/booking/codes.py)."""

from __future__ import annotations

from pilotline.rules.booking import LIVE, Reservation, Status
from pilotline.rules.booking.capacity import covering, offered_now, reserved_count
from pilotline.rules.booking.codes import STATUS_CODES, ends_use, status_code

H = 3_600_000


def res(rid: str, start: int, end: int, status: Status = Status.CONFIRMED,
        machine: str = "m1") -> Reservation:
    return Reservation(rid, machine, "tenant-a", start, end, status)


def test_a_live_booking_holds_its_machine_over_its_half_open_interval() -> None:
    booked = [res("a", 10 * H, 12 * H)]
    assert covering(booked, 10 * H - 1) is None
    assert covering(booked, 10 * H) == booked[0]
    assert covering(booked, 12 * H - 1) == booked[0]
    assert covering(booked, 12 * H) is None


def test_every_live_status_holds_and_no_other_does() -> None:
    for status in Status:
        found = covering([res("a", 0, H, status)], H // 2)
        assert (found is not None) is (status in LIVE), status


def test_a_hold_that_ran_out_holds_nothing_even_before_it_is_expired() -> None:
    hold = Reservation("a", "m1", "tenant-a", 0, 2 * H, Status.HELD, hold_until_ms=H)
    assert covering([hold], H - 1) == hold
    assert covering([hold], H) is None


def test_a_reserved_machine_is_offered_to_no_one_whatever_its_own_offer() -> None:
    booked = [res("a", 10 * H, 12 * H, Status.HELD)]
    now = offered_now(True, booked, 11 * H)
    assert (now.offered, now.reserved, now.booking) == (False, True, booked[0])
    assert offered_now(False, booked, 11 * H).reserved  # reserved while not even idle
    free = offered_now(True, booked, 12 * H)
    assert (free.offered, free.reserved, free.booking) == (True, False, None)
    assert not offered_now(False, [], 0).offered  # never offers what the machine does not


def test_a_zone_counts_its_machines_held_now() -> None:
    live = {
        "m1": [res("a", 0, H, machine="m1")],
        "m2": [res("b", H, 2 * H, machine="m2"), res("c", 0, H, Status.CANCELLED, "m2")],
    }
    assert reserved_count(["m1", "m2", "m3"], live, H // 2) == 1
    assert reserved_count(["m1", "m2", "m3"], live, H) == 1
    assert reserved_count(["m2"], live, H) == 1
    assert reserved_count(["m1", "m2"], live, 2 * H) == 0


def test_status_codes_are_a_stable_contract() -> None:
    # never renumbered: dashboards and billing read them (README, time-series contract)
    assert {s.value: c for s, c in STATUS_CODES.items()} == {
        "held": 1, "requested": 2, "confirmed": 3, "active": 4, "completed": 5,
        "cancelled": 6, "rejected": 7, "expired": 8, "no_show": 9, "preempted": 10,
    }
    assert status_code(Status.NO_SHOW) == 9


def test_use_is_metered_when_a_booking_ends_after_its_start() -> None:
    assert ends_use(Status.COMPLETED, 5, 0)
    assert ends_use(Status.NO_SHOW, 5, 0)
    assert ends_use(Status.PREEMPTED, 5, 0)
    assert ends_use(Status.CANCELLED, 5, 5)  # cancelled once it had begun
    assert not ends_use(Status.CANCELLED, 4, 5)  # before: nothing to meter
    assert not any(ends_use(s, 5, 0) for s in (Status.ACTIVE, Status.EXPIRED, Status.REJECTED))

"""The ``booking`` and ``usage`` measurements (issue 15) on a real gateway with a fake clock:
every status move of every reservation, made through the API or by the lifecycle, becomes
exactly one ``booking`` point in the outbox; a booking that ends with use to meter (completed,
no-show, preempted, cancelled after its start) one ``usage`` point; a restarted gateway writes
none of them again. The points reaching a real victoria-metrics, and surviving one that is
down: tests/integration/test_booking_points_influx.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from tests.auth import bearer
from tests.fakes import T0, Clock
from tests.gateway.test_booked_capacity import IDLE, Site
from tests.sites import UNIT_DEFAULTS, machine_config, site_yaml

from pilotline.gateway.api.app import create_app
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway
from pilotline.gateway.service.booking_points import BOOKING_EVENTS_REPORT
from pilotline.gateway.sinks.influx.writer import MemoryWriter
from pilotline.gateway.store.tokens import Role

MIN = 60_000
HOUR = 60 * MIN
START = T0 + HOUR
END = START + HOUR


def site_file(tmp_path: Path) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(
        site_yaml(
            {"z": [
                machine_config("laser-01", "acme", capabilities=["laser-cutting"]),
                machine_config("laser-02", "acme", capabilities=["laser-cutting"]),
                machine_config("press-01", "umbra", capabilities=["pressing"],
                               booking={"charge": {"rate_per_hour": 30, "currency": "CHF"}}),
            ]},
            site="marseille",
            store=tmp_path / "gw.db",
            # silent for up to 2 h is still the last state: the tests sample sparsely
            defaults={**UNIT_DEFAULTS, "offering": "always", "stale_after_s": 7200},
        )
    )
    return path


def open_gateway(path: Path, clock: Clock) -> Gateway:
    gateway = Gateway(
        load_config(path), writer=MemoryWriter(), clock_ms=clock, monotonic_ms=clock.monotonic
    )
    gateway.caught_up = True
    return gateway


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    clock = Clock(T0)
    gateway = open_gateway(site_file(tmp_path), clock)
    transport = httpx.ASGITransport(app=create_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield Site(gateway, client, clock)
    gateway.store.close()


def parse(line: str) -> tuple[str, dict[str, str], dict[str, str], int]:
    """measurement, tags, fields, time (ms) of a line with no escaped characters."""
    key, body, ns = line.split(" ")
    measurement, *pairs = key.split(",")
    tags = dict(p.split("=", 1) for p in pairs)
    values = dict(p.split("=", 1) for p in body.split(","))
    return measurement, tags, values, int(ns) // 1_000_000


def points(site: Site, measurement: str) -> list[tuple[dict[str, str], dict[str, str], int]]:
    return [
        (tags, values, ts)
        for _, line in site.gateway.store.outbox_peek(100_000)
        for m, tags, values, ts in [parse(line)]
        if m == measurement
    ]


async def test_every_move_is_one_booking_point_and_every_end_one_usage_point(
    site: Site,
) -> None:
    gateway = site.gateway
    site.at(T0, IDLE)
    used = await site.book(site.smallco, "laser-01", START, END)  # held, confirmed (API)
    missed = await site.book(site.bigco, "laser-02", START, END)
    dropped = await site.book(site.bigco, "press-01", START, END)
    gateway.booking_points.flush()
    cancel = await site.client.post(f"/api/reservations/{dropped}/cancel", headers=site.bigco)
    assert cancel.json()["status"] == "cancelled"  # before its start: nothing to meter
    # the lifecycle: laser-01 runs inside the booking, laser-02 never does
    site.at(START + 5 * MIN, {**IDLE, "laser-01": "Executing"})
    assert gateway.booking_points.flush() > 0
    site.at(START + 20 * MIN, {**IDLE, "laser-01": "Executing"})
    site.at(END - 15 * MIN, IDLE)
    site.at(END + MIN, IDLE)
    gateway.booking_points.flush()
    assert gateway.booking_points.flush() == 0  # nothing new: nothing written again

    book = gateway.store.reservations()
    moves = {
        (rid, s.value) for rid in (used, missed, dropped) for s, *_ in book.events(rid)
    }
    booked = points(site, "booking")
    assert sorted((v["reservation"].strip('"'), t["status"]) for t, v, _ in booked) == sorted(
        moves
    )
    assert len(booked) == len(moves) == 10  # each exactly once
    tags, values, ts = next(p for p in booked if p[0]["status"] == "no_show")
    assert tags == {
        "site": "marseille", "zone": "z", "machine": "laser-02", "owner": "acme",
        "tenant": "bigco", "status": "no_show",
    }
    assert values == {
        "reservation": f'"{missed}"', "start_ms": f"{START}i", "end_ms": f"{END}i",
        "status_code": "9i",
    }
    assert ts == START  # stamped at the reservation's start
    assert {t["status"]: v["status_code"] for t, v, _ in booked} == {
        "held": "1i", "confirmed": "3i", "active": "4i", "completed": "5i",
        "cancelled": "6i", "no_show": "9i",
    }

    usage = {t["machine"]: (t, v, ts) for t, v, ts in points(site, "usage")}
    assert set(usage) == {"laser-01", "laser-02"}  # the cancelled one had not begun
    tags, values, ts = usage["laser-01"]
    assert tags == {
        "site": "marseille", "zone": "z", "machine": "laser-01", "owner": "acme",
        "tenant": "smallco",
    }
    assert ts == START
    # ran from START + 5 min until END - 15 min (idle first and last), metered to END
    assert values == {
        "booked_s": "3600", "running_s": "2400", "idle_s": "1200", "down_s": "0",
        "offline_s": "0", "overrun_s": "0", "charge": "0", "no_show": "0i",
    }
    # a no-show is metered up to the move (the lifecycle's run at START + 20 min): after it,
    # the machine is free for others
    _, values, _ = usage["laser-02"]
    assert (values["no_show"], values["idle_s"], values["running_s"]) == ("1i", "1200", "0")


async def test_a_restarted_gateway_writes_no_point_twice(tmp_path: Path) -> None:
    path = site_file(tmp_path)
    clock = Clock(T0)
    gateway = open_gateway(path, clock)
    book = gateway.store.reservations()
    tenant = bearer(gateway.store, Role.TENANT, "smallco")
    transport = httpx.ASGITransport(app=create_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        rid = (await client.post(
            "/api/reservations", headers=tenant,
            json={"machine": "laser-01", "start": START, "end": END},
        )).json()["id"]
    assert gateway.booking_points.flush() == 1
    book.confirm(rid, T0 + MIN, approval=False, by="smallco")  # written, then killed
    gateway.store.close()

    again = open_gateway(path, clock)
    assert again.store.last_report(BOOKING_EVENTS_REPORT) == 1
    assert again.booking_points.flush() == 1  # the confirmation only
    assert again.booking_points.flush() == 0
    statuses = [
        line.split(",status=")[1].split(",")[0].split(" ")[0]
        for _, line in again.store.outbox_peek(1000)
        if line.startswith("booking,")
    ]
    assert statuses == ["held", "confirmed"]
    again.store.close()


async def test_the_charge_is_the_owners_rule_as_the_statement_gives_it(site: Site) -> None:
    """press-01 charges 30 CHF an hour and a no-show its booked time in full (the default
    ``no_show_fraction``): the usage point carries the statement's figure."""
    site.at(T0, IDLE)
    rid = await site.book(site.smallco, "press-01", START, END)
    site.at(START + 16 * MIN, IDLE)  # no-show
    site.gateway.booking_points.flush()
    [(_, values, _)] = points(site, "usage")
    assert (values["charge"], values["no_show"]) == ("30", "1i")
    operator = bearer(site.gateway.store, Role.OPERATOR)
    answer = await site.client.get(
        "/api/usage", params={"from": T0, "to": T0 + 24 * HOUR}, headers=operator
    )
    [line] = [line for line in answer.json()["lines"] if line["id"] == rid]
    assert line["charge"] == 30.0


async def test_a_correction_writes_the_usage_again_with_the_overrun_it_had(site: Site) -> None:
    gateway = site.gateway
    site.at(T0, IDLE)
    rid = await site.book(site.smallco, "laser-01", START, END)
    site.at(START + 5 * MIN, {**IDLE, "laser-01": "Executing"})
    site.at(END + MIN, {**IDLE, "laser-01": "Executing"})  # completed, still running
    gateway.booking_points.flush()
    [(_, first, ts)] = points(site, "usage")
    assert first["overrun_s"] == "60"  # as far as it was known at the move
    site.at(END + 10 * MIN, IDLE)  # the overrun ended at END + 10 min
    assert gateway.booking_points.correct(rid)
    [_, (_, corrected, again)] = points(site, "usage")
    assert again == ts == START  # the same point: it replaces the first
    assert (corrected["overrun_s"], corrected["running_s"]) == ("600", "3300")
    assert not gateway.booking_points.correct("r_none")
    live = await site.book(site.smallco, "laser-02", END + HOUR, END + 2 * HOUR)
    assert not gateway.booking_points.correct(live)  # not ended: nothing to meter yet

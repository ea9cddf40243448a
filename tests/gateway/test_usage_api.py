"""``GET /api/usage`` (api/usage.py) over a real gateway on a fake clock: one booking used
with an overrun, one no-show and one late cancellation, metered from the states the gateway
confirmed; what each tenant and owner sees; the CSV; a booking in use is provisional."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.auth import bearer
from tests.fakes import T0, Clock
from tests.sites import UNIT_DEFAULTS, machine_config, site_yaml

from pilotline.collectors.mqtt.collector import AckToken
from pilotline.gateway.api.app import create_app
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway
from pilotline.gateway.sinks.influx.writer import MemoryWriter
from pilotline.gateway.store.tokens import Role
from pilotline.rules import Sample
from pilotline.rules.booking import BookingRules, Request, Status

MIN = 60_000
HOUR = 60 * MIN
START = T0 + 2 * HOUR
END = START + HOUR
DAY = 24 * HOUR


def site_text(tmp_path: Path) -> str:
    return site_yaml(
        {"z": [
            machine_config("laser-01", "acme", booking={"charge": {
                "basis": "use", "rate_per_hour": 60, "step_s": "15m"}}),
            machine_config("press-01", "umbra"),
        ]},
        influx=None,
        store=tmp_path / "gw.db",
        defaults={**UNIT_DEFAULTS, "stale_after_s": 3600, "publish_interval_s": 600,
                  "offering": "always"},
        owners={
            "acme": {"show_to_tenants": True},
            "umbra": {"show_to_tenants": False,
                      "booking": {"charge": {"rate_per_hour": 30, "late_cancel_fee": 20,
                                             "currency": "CHF"}}},
        },
    )


@dataclass
class Site:
    gateway: Gateway
    clock: Clock
    client: httpx.AsyncClient
    ids: dict[str, str]
    seq: int = 0

    def at(self, ts: int, states: dict[str, str]) -> None:
        """The clock at ``ts``, each machine reporting its state then; the lifecycle runs."""
        self.clock.set(ts)
        for machine, state in states.items():
            self.seq += 1
            self.gateway.ingest.sample(Sample(machine, ts, {"state": state}),
                                       AckToken(1, self.seq, self.seq))
        self.gateway.tick()
        self.gateway.commit()
        self.gateway.bookings.settle()

    async def usage(self, who: dict[str, str], **query: Any) -> httpx.Response:
        return await self.client.get(
            "/api/usage", params={"from": T0, "to": T0 + DAY, **query}, headers=who
        )


def book(
    gateway: Gateway, machine: str, tenant: str, start: int, end: int, *, now: int = T0
) -> str:
    """A confirmed booking, made at ``now``."""
    reservations = gateway.store.reservations()
    held = reservations.request(Request(machine, tenant, start, end), BookingRules(),
                                [(now, now + DAY)], now).reservation
    assert held is not None
    reservations.confirm(held.id, now, approval=False, by=tenant)
    return held.id


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    (tmp_path / "site.yaml").write_text(site_text(tmp_path))
    clock = Clock(T0)
    gateway = Gateway(load_config(tmp_path / "site.yaml"), writer=MemoryWriter(),
                      clock_ms=clock, monotonic_ms=clock.monotonic)
    gateway.caught_up = True
    ids = {
        "used": book(gateway, "laser-01", "smallco", START, END),
        "missed": book(gateway, "press-01", "bigco", START, END),
        "cancelled": book(gateway, "press-01", "smallco", START + 2 * HOUR, START + 3 * HOUR),
    }
    gateway.store.reservations().cancel(ids["cancelled"], T0 + 10 * MIN, by="smallco")
    transport = httpx.ASGITransport(app=create_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield Site(gateway, clock, client, ids)
    gateway.store.close()


def run_the_day(site: Site) -> None:
    """laser-01 runs from START + 5 min to END + 10 min; press-01 stays idle."""
    idle = "NotExecuting"
    for ts in range(T0, START, 10 * MIN):
        site.at(ts, {"laser-01": idle, "press-01": idle})
    for ts in range(START + 5 * MIN, END + 11 * MIN, 5 * MIN):
        site.at(ts, {"laser-01": "Executing" if ts < END + 10 * MIN else idle,
                     "press-01": idle})
    site.at(END + 30 * MIN, {"laser-01": idle, "press-01": idle})


def by_id(answer: httpx.Response) -> dict[str, dict[str, Any]]:
    assert answer.status_code == 200, answer.text
    return {line["id"]: line for line in answer.json()["lines"]}


async def test_a_tenant_gets_its_own_lines_metered_and_charged(site: Site) -> None:
    run_the_day(site)
    smallco = bearer(site.gateway.store, Role.TENANT, "smallco")

    answer = await site.usage(smallco)
    lines = by_id(answer)

    assert set(lines) == {site.ids["used"], site.ids["cancelled"]}
    used = lines[site.ids["used"]]
    assert used["status"] == "completed"
    assert used["owner"] == "acme"  # acme shows its name
    assert {k: used[k] for k in ("booked_min", "used_min", "idle_min", "unused_min",
                                 "overrun_min", "billed_min")} == {
        "booked_min": 60, "used_min": 55, "idle_min": 5, "unused_min": 5, "overrun_min": 10,
        "billed_min": 75,  # 55 + 10 used, up to the 15 min step
    }
    assert (used["charge"], used["currency"], used["provisional"]) == (75.0, "EUR", False)
    cancelled = lines[site.ids["cancelled"]]
    assert cancelled["owner"] is None  # umbra hides its name from tenants
    assert (cancelled["status"], cancelled["late_cancel"], cancelled["waived"]) == (
        "cancelled", True, False)
    assert (cancelled["charge"], cancelled["currency"]) == (20.0, "CHF")
    totals = answer.json()["totals"]
    assert totals["bookings"] == 2
    assert totals["charges"] == [{"currency": "CHF", "amount": 20.0},
                                 {"currency": "EUR", "amount": 75.0}]
    assert answer.json()["from"] == "2026-11-27T00:00:00.000+00:00"


async def test_owners_see_the_bookings_on_their_machines_only(site: Site) -> None:
    run_the_day(site)
    store = site.gateway.store
    acme = by_id(await site.usage(bearer(store, Role.OWNER, "acme")))
    assert set(acme) == {site.ids["used"]}
    umbra = by_id(await site.usage(bearer(store, Role.OWNER, "umbra")))
    assert set(umbra) == {site.ids["missed"], site.ids["cancelled"]}
    missed = umbra[site.ids["missed"]]
    # a no-show pays its booked hour in full by default
    assert (missed["status"], missed["charge"], missed["tenant"]) == ("no_show", 30.0, "bigco")
    everything = by_id(await site.usage(bearer(store, Role.OPERATOR)))
    assert set(everything) == set(site.ids.values())
    bigco = by_id(await site.usage(bearer(store, Role.TENANT, "bigco")))
    assert set(bigco) == {site.ids["missed"]}
    assert "smallco" not in (await site.usage(bearer(store, Role.TENANT, "bigco"))).text


async def test_a_booking_in_use_is_metered_up_to_now_and_provisional(site: Site) -> None:
    for ts in range(T0, START, 10 * MIN):
        site.at(ts, {"laser-01": "NotExecuting"})
    site.at(START + 5 * MIN, {"laser-01": "Executing"})
    site.at(START + 30 * MIN, {"laser-01": "Executing"})

    line = by_id(await site.usage(bearer(site.gateway.store, Role.OPERATOR)))[site.ids["used"]]

    assert (line["status"], line["provisional"]) == ("active", True)
    assert (line["used_min"], line["idle_min"], line["charge"]) == (25, 5, 30.0)


async def test_the_csv_has_a_header_row_and_the_same_figures(site: Site) -> None:
    run_the_day(site)
    operator = bearer(site.gateway.store, Role.OPERATOR)

    answer = await site.usage(operator, format="csv")

    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/csv")
    assert answer.headers["content-disposition"] == (
        'attachment; filename="pilotline-usage-20261127-20261128.csv"'
    )
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    as_json = by_id(await site.usage(operator))
    assert {r["id"]: float(r["charge"]) for r in rows} == {
        rid: line["charge"] for rid, line in as_json.items()
    }
    cancelled = next(r for r in rows if r["id"] == site.ids["cancelled"])
    assert (cancelled["late_cancel"], cancelled["waived"], cancelled["owner"]) == (
        "1", "0", "umbra")


async def test_a_reversed_or_too_wide_range_is_refused(site: Site) -> None:
    operator = bearer(site.gateway.store, Role.OPERATOR)
    assert (await site.usage(operator, to=T0 - 1)).status_code == 422
    assert (await site.usage(operator, to=T0 + 100 * DAY)).status_code == 422
    assert (await site.usage(operator, format="pdf")).status_code == 422


async def test_an_extended_booking_is_one_line_with_no_late_cancel(site: Site) -> None:
    """A change makes a successor and cancels its predecessor (store ``change``): the
    statement has the successor alone, metered over the whole chain, and the predecessor is
    neither a line nor a late cancellation (it was changed an hour before its start, within
    umbra's default one-day late-cancel threshold)."""
    store = site.gateway.store
    booked = store.reservations().change(
        site.ids["missed"], START, END + HOUR, START - HOUR,
        rules=BookingRules(), offered=[(T0, T0 + DAY)], by="bigco",
    )
    successor = booked.reservation
    assert successor is not None
    run_the_day(site)

    lines = by_id(await site.usage(bearer(store, Role.TENANT, "bigco")))

    assert set(lines) == {successor.id}
    line = lines[successor.id]
    assert (line["booked_min"], line["late_cancel"], line["charge"]) == (120, False, 60.0)


async def test_a_no_show_is_metered_until_it_was_judged_one(site: Site) -> None:
    """bigco never came to press-01; once the booking is a no-show its slot is free again, so
    the owner's run later in that hour is neither bigco's use nor billed to it by use."""
    for ts in [*range(T0, START, 10 * MIN), START + 20 * MIN]:
        site.at(ts, {"press-01": "NotExecuting"})
    book = site.gateway.store.reservations()
    assert book.get(site.ids["missed"]).status is Status.NO_SHOW  # type: ignore[union-attr]
    for ts in range(START + 30 * MIN, END + 10 * MIN, 10 * MIN):
        site.at(ts, {"press-01": "Executing"})

    line = by_id(await site.usage(bearer(site.gateway.store, Role.OPERATOR)))[site.ids["missed"]]

    assert (line["status"], line["used_min"], line["idle_min"]) == ("no_show", 0, 20)
    usage = site.gateway.bookings.usage(site.ids["missed"])
    assert usage is not None
    assert usage.running_ms == 0

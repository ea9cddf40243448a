"""Booking-aware capacity (issue 15) on a real gateway with a fake clock: a machine a live
booking holds is written as ``reserved`` and not offered (``capacity``, ``zone_capacity``),
from the booking's start to its end, whoever moved the booking; and who sees the booking
beside the machine in ``/api/machines`` and ``/api/capacity`` (its owner and the operators,
no tenant)."""

from __future__ import annotations

from collections.abc import AsyncIterator
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
from pilotline.rules.booking import Status

MIN = 60_000
HOUR = 60 * MIN
START = T0 + HOUR
END = START + HOUR

_delivery = iter(range(1, 1_000_000))


class Site:
    def __init__(self, gateway: Gateway, client: httpx.AsyncClient, clock: Clock) -> None:
        self.gateway = gateway
        self.client = client
        self.clock = clock
        store = gateway.store
        self.smallco = bearer(store, Role.TENANT, "smallco")
        self.bigco = bearer(store, Role.TENANT, "bigco")
        self.acme = bearer(store, Role.OWNER, "acme")
        self.umbra = bearer(store, Role.OWNER, "umbra")
        self.operator = bearer(store, Role.OPERATOR)

    def at(self, ts: int, states: dict[str, str]) -> None:
        """The clock at ``ts``, each machine reporting its state then; the rules timer, the
        bookings' lifecycle and the booked-capacity check run, and everything is committed."""
        gateway = self.gateway
        self.clock.set(ts)
        for machine, state in states.items():
            n = next(_delivery)
            gateway.ingest.sample(Sample(machine, ts, {"state": state}), AckToken(1, n, n))
        gateway.tick()
        gateway.commit()
        gateway.bookings.settle()
        gateway.stage_events(gateway.booked.tick())
        gateway.commit()

    async def book(self, who: dict[str, str], machine: str, start: int, end: int) -> str:
        held = await self.client.post(
            "/api/reservations", headers=who,
            json={"machine": machine, "start": start, "end": end},
        )
        assert held.status_code == 201, held.text
        rid: str = held.json()["id"]
        confirmed = await self.client.post(f"/api/reservations/{rid}/confirm", headers=who)
        assert confirmed.json()["status"] == "confirmed", confirmed.text
        return rid

    async def get(self, who: dict[str, str], path: str) -> Any:
        answer = await self.client.get(path, headers=who)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def lines(self, measurement: str, **tags: str) -> list[str]:
        """The outbox's lines of ``measurement`` with these tags, oldest first."""
        found = []
        for _, line in self.gateway.store.outbox_peek(100_000):
            key = line.split(" ", 1)[0]
            if key.split(",", 1)[0] != measurement:
                continue
            if all(f",{k}={v}" in key + "," or key.endswith(f",{k}={v}") for k, v in tags.items()):
                found.append(line)
        return found


def fields(line: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in line.split(" ")[1].split(","))


def stamp_ms(line: str) -> int:
    return int(line.rsplit(" ", 1)[1]) // 1_000_000


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    path = tmp_path / "site.yaml"
    path.write_text(
        site_yaml(
            {"z": [
                machine_config("laser-01", "acme", capabilities=["laser-cutting"]),
                machine_config("laser-02", "acme", capabilities=["laser-cutting"]),
                machine_config("press-01", "umbra", capabilities=["pressing"]),
            ]},
            store=tmp_path / "gw.db",
            defaults={**UNIT_DEFAULTS, "offering": "always", "stale_after_s": 3600},
            owners={"acme": {"show_to_tenants": True}, "umbra": {"show_to_tenants": True}},
        )
    )
    clock = Clock(T0)
    gateway = Gateway(
        load_config(path), writer=MemoryWriter(), clock_ms=clock, monotonic_ms=clock.monotonic
    )
    gateway.caught_up = True
    transport = httpx.ASGITransport(app=create_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield Site(gateway, client, clock)
    gateway.store.close()


IDLE = {"laser-01": "NotExecuting", "laser-02": "NotExecuting", "press-01": "NotExecuting"}


async def test_a_booked_machine_is_reserved_and_not_offered_from_its_start_to_its_end(
    site: Site,
) -> None:
    site.at(T0, IDLE)
    rid = await site.book(site.smallco, "laser-01", START, END)
    site.at(START - 5 * MIN, IDLE)
    assert fields(site.lines("capacity", machine="laser-01")[-1])["offered"] == "1i"

    site.at(START + MIN, IDLE)  # its start has passed (the core's clock lags 2 s)
    last = site.lines("capacity", machine="laser-01")[-1]
    assert (fields(last)["offered"], fields(last)["reserved"]) == ("0i", "1i")
    assert START <= stamp_ms(last) <= START + MIN
    assert fields(last)["available"] == "1i"  # what the machine does is not changed
    other = site.lines("capacity", machine="laser-02")[-1]
    assert (fields(other)["offered"], fields(other)["reserved"]) == ("1i", "0i")
    # the periodic rows while it lasts, machine and zone
    site.at(START + 10 * MIN, IDLE)
    periodic = site.lines("capacity", machine="laser-01")[-1]
    assert stamp_ms(periodic) == START + 10 * MIN
    assert (fields(periodic)["offered"], fields(periodic)["reserved"]) == ("0i", "1i")
    zones = {
        cap: fields(site.lines("zone_capacity", capability=cap)[-1])["reserved"]
        for cap in ("all", "laser-cutting", "pressing")
    }
    assert zones == {"all": "1i", "laser-cutting": "1i", "pressing": "0i"}
    # cancelled through the API before anyone used it: it holds nothing, offered again
    cancel = await site.client.post(f"/api/reservations/{rid}/cancel", headers=site.acme)
    assert cancel.json()["status"] == "cancelled"
    site.at(START + 11 * MIN, IDLE)
    again = site.lines("capacity", machine="laser-01")[-1]
    assert (fields(again)["offered"], fields(again)["reserved"]) == ("1i", "0i")
    assert stamp_ms(again) > START + 10 * MIN


async def test_the_booking_shows_beside_the_machine_to_its_owner_and_the_operator_only(
    site: Site,
) -> None:
    site.at(T0, IDLE)
    rid = await site.book(site.smallco, "laser-01", START, END)
    site.at(START + 5 * MIN, {**IDLE, "laser-01": "Executing"})  # the tenant runs it
    assert site.gateway.store.reservations().get(rid).status is Status.ACTIVE  # type: ignore[union-attr]
    booking = {
        "reservation": rid, "tenant": "smallco", "status": "active",
        "start": "2026-11-27T01:00:00.000+00:00", "until": "2026-11-27T02:00:00.000+00:00",
    }

    for who in (site.operator, site.acme):
        machines = {m["id"]: m for m in await site.get(who, "/api/machines")}
        assert machines["laser-01"]["state"] == "running"
        assert machines["laser-01"]["reserved"] is True
        assert machines["laser-01"]["booking"] == booking
        assert machines["laser-02"]["booking"] is None
        capacity = await site.get(who, "/api/capacity")
        assert [(r["machine"], r["state"], r["booking"]) for r in capacity["reserved"]] == [
            ("laser-01", "running", booking)
        ]
        assert capacity["machines"] == (3 if who is site.operator else 2)
    # the other owner sees neither the machine nor the booking
    assert "laser-01" not in str(await site.get(site.umbra, "/api/machines"))
    assert (await site.get(site.umbra, "/api/capacity"))["reserved"] == []
    # tenants, the booking's own included: no booking, no reserved machine, not in the count
    for who in (site.smallco, site.bigco):
        capacity = await site.get(who, "/api/capacity")
        assert capacity["reserved"] == []
        assert rid not in str(capacity)
        assert "smallco" not in str(capacity)
        assert capacity["machines"] == 2
        assert {c["machine"] for c in capacity["available"]} == {"laser-02", "press-01"}
        assert (await site.client.get("/api/machines", headers=who)).status_code == 403


async def test_an_idle_machine_held_by_a_booking_is_not_available_to_tenants(
    site: Site,
) -> None:
    site.at(T0, IDLE)
    await site.book(site.smallco, "laser-02", START, END)
    site.at(START + MIN, IDLE)
    tenant = await site.get(site.bigco, "/api/capacity?capability=laser-cutting")
    assert [c["machine"] for c in tenant["available"]] == ["laser-01"]
    assert tenant["machines"] == 1
    owner = await site.get(site.acme, "/api/capacity?capability=laser-cutting")
    assert [c["machine"] for c in owner["available"]] == ["laser-01"]
    waiting = owner["idle_not_yet_available"]
    assert [(c["machine"], c["offered"], c["reserved"]) for c in waiting] == [
        ("laser-02", False, True)
    ]
    assert waiting[0]["booking"]["tenant"] == "smallco"


async def test_a_booking_that_ends_gives_the_machine_back(site: Site) -> None:
    site.at(T0, IDLE)
    rid = await site.book(site.smallco, "laser-01", START, END)
    site.at(START + 5 * MIN, {**IDLE, "laser-01": "Executing"})
    site.at(END - 10 * MIN, IDLE)
    assert fields(site.lines("capacity", machine="laser-01")[-1])["reserved"] == "1i"
    site.at(END + MIN, IDLE)
    book = site.gateway.store.reservations()
    assert book.get(rid).status is Status.COMPLETED  # type: ignore[union-attr]
    last = site.lines("capacity", machine="laser-01")[-1]
    assert (fields(last)["offered"], fields(last)["reserved"]) == ("1i", "0i")
    capacity = await site.get(site.bigco, "/api/capacity")
    assert "laser-01" in {c["machine"] for c in capacity["available"]}

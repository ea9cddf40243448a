"""The booking routes (api/booking.py) over the app in-process with a fake clock: offers, a
hold, its confirmation, approval and cancellation, the 409 and 422 answers, the
Idempotency-Key, and what one tenant may see of another's booking. The race of 100
requests through the real server: tests/integration/test_booking_race.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.auth import bearer
from tests.fakes import T0, Clock
from tests.sites import UNIT_DEFAULTS, machine_config, site_yaml

from pilotline.gateway.api.app import create_app
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway
from pilotline.gateway.store.tokens import Role

HOUR = 3_600_000
START = T0 + 2 * HOUR  # the clock stands at T0


class Site:
    def __init__(self, gateway: Gateway, client: httpx.AsyncClient, clock: Clock) -> None:
        self.gateway = gateway
        self.clock = clock
        self.client = client
        store = gateway.store
        self.smallco = bearer(store, Role.TENANT, "smallco")
        self.bigco = bearer(store, Role.TENANT, "bigco")
        self.acme = bearer(store, Role.OWNER, "acme")
        self.umbra = bearer(store, Role.OWNER, "umbra")
        self.operator = bearer(store, Role.OPERATOR)

    async def book(
        self, who: dict[str, str], machine: str, start: int, end: int, **headers: str
    ) -> httpx.Response:
        return await self.client.post(
            "/api/reservations", headers={**who, **headers},
            json={"machine": machine, "start": start, "end": end, "purpose": "trial run"},
        )

    async def step(self, who: dict[str, str], rid: str, action: str) -> httpx.Response:
        return await self.client.post(f"/api/reservations/{rid}/{action}", headers=who)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    path = tmp_path / "site.yaml"
    path.write_text(
        site_yaml(
            {"z": [
                machine_config("laser-01", "acme", capabilities=["laser-cutting"],
                               booking={"min_length_s": 3600, "buffer_s": 900}),
                machine_config("press-01", "umbra", capabilities=["pressing"],
                               booking={"approval": True}),
            ]},
            influx=None,
            store=tmp_path / "gw.db",
            defaults={**UNIT_DEFAULTS, "offering": "always"},
            owners={"acme": {"show_to_tenants": True}, "umbra": {"show_to_tenants": False}},
        )
    )
    clock = Clock(T0)
    gateway = Gateway(load_config(path), clock_ms=clock)
    transport = httpx.ASGITransport(app=create_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield Site(gateway, client, clock)
    gateway.store.close()


async def test_a_hold_is_confirmed_and_cancelled(site: Site) -> None:
    held = await site.book(site.smallco, "laser-01", START, START + HOUR)
    assert held.status_code == 201, held.text
    body = held.json()
    assert body["status"] == "held"
    assert body["hold_until"] == "2026-11-27T00:10:00.000+00:00"  # the default 10 min hold
    rid = body["id"]

    confirmed = await site.step(site.smallco, rid, "confirm")
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["status"] == "confirmed"
    again = await site.step(site.smallco, rid, "confirm")
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"

    # the owner of the machine may cancel it; the other owner does not even see it
    assert (await site.step(site.umbra, rid, "cancel")).status_code == 404
    cancelled = await site.step(site.acme, rid, "cancel")
    assert cancelled.json()["status"] == "cancelled"
    # its time is free again
    assert (await site.book(site.bigco, "laser-01", START, START + HOUR)).status_code == 201


async def test_a_booking_the_owner_approves_is_requested_until_approved(site: Site) -> None:
    rid = (await site.book(site.smallco, "press-01", START, START + HOUR)).json()["id"]
    requested = await site.step(site.smallco, rid, "confirm")
    assert requested.json()["status"] == "requested"
    assert (await site.step(site.smallco, rid, "approve")).status_code == 403
    assert (await site.step(site.acme, rid, "approve")).status_code == 404  # not its machine
    approved = await site.step(site.umbra, rid, "approve")
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "confirmed"

    other = (await site.book(site.bigco, "press-01", START + HOUR, START + 2 * HOUR)).json()
    await site.step(site.bigco, other["id"], "confirm")
    rejected = await site.step(site.operator, other["id"], "reject")
    assert rejected.json()["status"] == "rejected"


async def test_a_broken_rule_is_a_422_naming_it(site: Site) -> None:
    short = await site.book(site.smallco, "laser-01", START, START + HOUR // 2)
    assert short.status_code == 422
    assert short.headers["content-type"] == "application/problem+json"
    assert short.json()["rule"] == "length"
    assert short.json()["detail"] == "at least 60 min per booking"
    past = await site.book(site.smallco, "laser-01", T0 - 2 * HOUR, T0 - HOUR)
    assert past.json()["rule"] == "notice"


async def test_a_conflict_hides_another_tenants_booking_and_offers_alternatives(
    site: Site,
) -> None:
    theirs = (await site.book(site.bigco, "laser-01", START, START + HOUR)).json()
    clash = await site.book(site.smallco, "laser-01", START + HOUR // 2, START + 3 * HOUR // 2)
    assert clash.status_code == 409
    body: dict[str, Any] = clash.json()
    assert theirs["id"] not in clash.text
    # the busy time with its 15 min buffer, no id
    assert body["conflicts"] == [{
        "id": None, "start_ms": START - HOUR // 4, "end_ms": START + 5 * HOUR // 4,
        "start": "2026-11-27T01:45:00.000+00:00", "end": "2026-11-27T03:15:00.000+00:00",
    }]
    assert body["alternatives"]
    assert all(a["start_ms"] >= START + 5 * HOUR // 4 or a["end_ms"] <= START - HOUR // 4
               for a in body["alternatives"])

    # and a tenant sees only its own bookings
    assert (await site.client.get(f"/api/reservations/{theirs['id']}",
                                  headers=site.smallco)).status_code == 404
    assert (await site.client.get("/api/reservations", headers=site.smallco)).json() == []
    assert (await site.step(site.smallco, theirs["id"], "cancel")).status_code == 404
    mine = (await site.client.get("/api/reservations", headers=site.bigco)).json()
    assert [r["id"] for r in mine] == [theirs["id"]]
    assert [r["id"] for r in (await site.client.get(
        "/api/reservations", headers=site.acme)).json()] == [theirs["id"]]
    assert (await site.client.get("/api/reservations", headers=site.umbra)).json() == []


async def test_a_retry_with_the_same_key_answers_the_same_reservation(site: Site) -> None:
    key = {"Idempotency-Key": "front-end-42"}
    first = await site.book(site.smallco, "laser-01", START, START + HOUR, **key)
    retry = await site.book(site.smallco, "laser-01", START, START + HOUR, **key)
    assert (first.status_code, retry.status_code) == (201, 200)
    assert retry.json()["id"] == first.json()["id"]
    other = await site.book(site.smallco, "laser-01", START + 4 * HOUR, START + 5 * HOUR, **key)
    assert other.status_code == 422
    assert other.json()["rule"] == "idempotency"
    listed = (await site.client.get("/api/reservations", headers=site.operator)).json()
    assert len(listed) == 1


async def test_offers_leave_out_bookings_and_their_buffers(site: Site) -> None:
    await site.book(site.bigco, "laser-01", START, START + HOUR)
    offers = (await site.client.get(
        f"/api/offers?from={T0}&to={T0 + 6 * HOUR}", headers=site.smallco
    )).json()
    by_machine = {o["machine"]: o for o in offers}
    assert set(by_machine) == {"laser-01", "press-01"}
    laser = by_machine["laser-01"]
    assert [(s["start_ms"], s["end_ms"]) for s in laser["slots"]] == [
        (T0, START - HOUR // 4), (START + 5 * HOUR // 4, T0 + 6 * HOUR)
    ]
    assert laser["owner"] == "acme"
    assert by_machine["press-01"]["owner"] is None
    assert laser["live_state"] is None  # states are the owners' business
    only = (await site.client.get("/api/offers?capability=pressing", headers=site.umbra)).json()
    assert [o["machine"] for o in only] == ["press-01"]
    assert only[0]["live_state"] is not None
    wide = await site.client.get(f"/api/offers?from={T0}&to={T0 + 40 * 24 * HOUR}",
                                 headers=site.smallco)
    assert wide.status_code == 422


async def test_an_operator_books_for_a_named_tenant(site: Site) -> None:
    anonymous = await site.book(site.operator, "laser-01", START, START + HOUR)
    assert anonymous.status_code == 422
    answer = await site.client.post(
        "/api/reservations", headers=site.operator,
        json={"machine": "laser-01", "start": START, "end": START + HOUR, "tenant": "smallco"},
    )
    assert answer.status_code == 201
    assert answer.json()["tenant"] == "smallco"
    assert (await site.book(site.acme, "laser-01", START, START + HOUR)).status_code == 403


async def test_a_hold_not_confirmed_in_time_expires_and_frees_its_slot(site: Site) -> None:
    rid = (await site.book(site.smallco, "laser-01", START, START + HOUR)).json()["id"]
    site.clock.ms = T0 + 10 * 60_000  # the default hold: 10 min
    late = await site.step(site.smallco, rid, "confirm")
    assert late.status_code == 409
    assert (await site.book(site.bigco, "laser-01", START, START + HOUR)).status_code == 201
    got = await site.client.get(f"/api/reservations/{rid}", headers=site.smallco)
    assert got.json()["status"] == "expired"

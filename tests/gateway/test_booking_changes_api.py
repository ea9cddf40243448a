"""POST /api/reservations/{id}/extend and /move (issue 15) over the app in-process with a fake
clock: a change answers the successor (201, ``Location``), the predecessor shows
``successor`` and the successor ``predecessor``; a change into another tenant's booking is a
409 without that booking's id; a broken rule is a 422 naming it; an Idempotency-Key makes a
retry harmless; who may change what. The concurrent race through the real server:
tests/integration/test_booking_change_race.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.fakes import T0, Clock
from tests.gateway.test_booking_api import Site
from tests.sites import UNIT_DEFAULTS, machine_config, site_yaml

from pilotline.gateway.api.app import create_app
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway
from pilotline.rules.booking import Status

HOUR = 3_600_000
START = T0 + 4 * HOUR  # the clock stands at T0; late_cancel: 2 h


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    path = tmp_path / "site.yaml"
    path.write_text(
        site_yaml(
            {"z": [
                machine_config("laser-01", "acme", booking={
                    "min_length_s": 3600, "max_length_s": 4 * 3600, "buffer_s": 900,
                    "late_cancel_s": 2 * 3600,
                }),
                machine_config("press-01", "umbra", booking={"approval": True}),
            ]},
            influx=None,
            store=tmp_path / "gw.db",
            defaults={**UNIT_DEFAULTS, "offering": "always"},
        )
    )
    clock = Clock(T0)
    gateway = Gateway(load_config(path), clock_ms=clock)
    transport = httpx.ASGITransport(app=create_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield Site(gateway, client, clock)
    gateway.store.close()


async def confirmed(site: Site, who: dict[str, str], machine: str, start: int, end: int,
                    *, approver: dict[str, str] | None = None) -> str:
    held = await site.book(who, machine, start, end)
    assert held.status_code == 201, held.text
    rid: str = held.json()["id"]
    assert (await site.step(who, rid, "confirm")).status_code == 200
    if approver is not None:
        assert (await site.step(approver, rid, "approve")).status_code == 200
    return rid


async def extend(site: Site, who: dict[str, str], rid: str, end: int,
                 **headers: str) -> httpx.Response:
    return await site.client.post(f"/api/reservations/{rid}/extend", headers={**who, **headers},
                                  json={"end": end})


async def move(site: Site, who: dict[str, str], rid: str, start: int, end: int) -> httpx.Response:
    return await site.client.post(f"/api/reservations/{rid}/move", headers=who,
                                  json={"start": start, "end": end})


async def get(site: Site, who: dict[str, str], rid: str) -> dict[str, Any]:
    answer = await site.client.get(f"/api/reservations/{rid}", headers=who)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_an_extension_is_a_successor_linked_both_ways(site: Site) -> None:
    old = await confirmed(site, site.smallco, "laser-01", START, START + HOUR)
    answer = await extend(site, site.smallco, old, START + 2 * HOUR)
    assert answer.status_code == 201, answer.text
    new = answer.json()
    assert answer.headers["location"] == f"/api/reservations/{new['id']}"
    assert (new["status"], new["start_ms"], new["end_ms"], new["predecessor"]) == (
        "confirmed", START, START + 2 * HOUR, old
    )
    before = await get(site, site.smallco, old)
    assert (before["status"], before["successor"], before["end_ms"]) == (
        "cancelled", new["id"], START + HOUR
    )
    assert (await get(site, site.acme, new["id"]))["predecessor"] == old
    listed = (await site.client.get("/api/reservations", headers=site.smallco)).json()
    assert {r["id"]: r["successor"] for r in listed} == {old: new["id"], new["id"]: None}

    # a move, by the machine's owner, continues the chain
    moved = await move(site, site.acme, new["id"], START + 10 * HOUR, START + 12 * HOUR)
    assert moved.status_code == 201, moved.text
    assert (await get(site, site.smallco, new["id"]))["successor"] == moved.json()["id"]
    # a predecessor can change no more
    again = await extend(site, site.smallco, old, START + 3 * HOUR)
    assert again.status_code == 409
    assert "only a live reservation can change" in again.json()["detail"]


async def test_extending_into_another_tenants_booking_is_a_409_without_its_id(
    site: Site,
) -> None:
    mine = await confirmed(site, site.smallco, "laser-01", START, START + HOUR)
    theirs = await confirmed(site, site.bigco, "laser-01", START + 2 * HOUR, START + 3 * HOUR)
    clash = await extend(site, site.smallco, mine, START + 2 * HOUR)
    assert clash.status_code == 409, clash.text
    assert clash.headers["content-type"] == "application/problem+json"
    assert theirs not in clash.text
    body = clash.json()
    assert body["conflicts"] == [{
        "id": None, "start_ms": START + 7 * HOUR // 4, "end_ms": START + 13 * HOUR // 4,
        "start": "2026-11-27T05:45:00.000+00:00", "end": "2026-11-27T07:15:00.000+00:00",
    }]
    assert "alternatives" in body
    # nothing changed
    kept = await get(site, site.smallco, mine)
    assert (kept["status"], kept["successor"], kept["end_ms"]) == ("confirmed", None, START + HOUR)
    # the owner of the machine sees whose it is
    seen = await extend(site, site.acme, mine, START + 2 * HOUR)
    assert seen.json()["conflicts"][0]["id"] == theirs


async def test_a_broken_rule_is_a_422_naming_it(site: Site) -> None:
    rid = await confirmed(site, site.smallco, "laser-01", START, START + HOUR)
    too_long = await extend(site, site.smallco, rid, START + 5 * HOUR)
    assert too_long.status_code == 422
    assert too_long.headers["content-type"] == "application/problem+json"
    assert (too_long.json()["rule"], too_long.json()["detail"]) == (
        "length", "at most 4 h per booking"
    )
    # 2 h before its start a booking can only grow
    site.clock.ms = START - 2 * HOUR
    late = await move(site, site.smallco, rid, START + HOUR, START + 2 * HOUR)
    assert (late.status_code, late.json()["rule"]) == (422, "late_cancel")
    no_end = await site.client.post(f"/api/reservations/{rid}/extend", headers=site.smallco,
                                    json={})
    assert no_end.status_code == 422
    assert (await get(site, site.smallco, rid))["status"] == "confirmed"


async def test_a_retry_with_the_same_key_answers_the_same_successor(site: Site) -> None:
    rid = await confirmed(site, site.smallco, "laser-01", START, START + HOUR)
    key = {"Idempotency-Key": "ext-7"}
    first = await extend(site, site.smallco, rid, START + 2 * HOUR, **key)
    retry = await extend(site, site.smallco, rid, START + 2 * HOUR, **key)
    assert (first.status_code, retry.status_code) == (201, 200)
    assert retry.json()["id"] == first.json()["id"]
    assert retry.headers["location"] == first.headers["location"]
    other = await extend(site, site.smallco, rid, START + 3 * HOUR, **key)
    assert (other.status_code, other.json()["rule"]) == (422, "idempotency")
    listed = (await site.client.get("/api/reservations", headers=site.operator)).json()
    assert len(listed) == 2


async def test_who_may_change_a_booking(site: Site) -> None:
    rid = await confirmed(site, site.smallco, "laser-01", START, START + HOUR)
    assert (await extend(site, site.bigco, rid, START + 2 * HOUR)).status_code == 404
    assert (await extend(site, site.umbra, rid, START + 2 * HOUR)).status_code == 404
    by_operator = await extend(site, site.operator, rid, START + 2 * HOUR)
    assert by_operator.status_code == 201, by_operator.text
    assert by_operator.json()["tenant"] == "smallco"

    # where the owner approves, a tenant's change asks again; the owner's does not
    press = await confirmed(site, site.smallco, "press-01", START, START + HOUR,
                            approver=site.umbra)
    asked = await extend(site, site.smallco, press, START + 2 * HOUR)
    assert asked.json()["status"] == "requested"
    approved = await site.step(site.umbra, asked.json()["id"], "approve")
    assert approved.json()["status"] == "confirmed"
    by_owner = await extend(site, site.umbra, asked.json()["id"], START + 3 * HOUR)
    assert by_owner.json()["status"] == "confirmed"


async def test_an_active_booking_is_extended_and_stays_active(site: Site) -> None:
    rid = await confirmed(site, site.smallco, "laser-01", START, START + HOUR)
    site.clock.ms = START + HOUR // 2
    site.gateway.store.reservations().settle(
        [(rid, Status.CONFIRMED, Status.ACTIVE, "running")], site.clock.ms
    )
    longer = await extend(site, site.smallco, rid, START + 2 * HOUR)
    assert longer.status_code == 201, longer.text
    assert (longer.json()["status"], longer.json()["start_ms"]) == ("active", START)
    moved = await move(site, site.smallco, longer.json()["id"], START + HOUR, START + 2 * HOUR)
    assert (moved.status_code, moved.json()["rule"]) == (422, "active")

"""Offers carry the forecast as advice (issue 15): each slot of ``GET /api/offers`` has
``forecast`` (idle share over its hours, the weeks behind it, how far it reaches), for
tenants as for owners and operators (api/forecast_advice.py says why tenants may see it)."""

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
from pilotline.gateway.api.forecast_advice import forecast_json
from pilotline.gateway.config import load_config
from pilotline.gateway.forecasts import Forecasts
from pilotline.gateway.service import Gateway
from pilotline.gateway.store.tokens import Role
from pilotline.rules.forecast import (
    HOUR_MS,
    WEEK_MS,
    evidence_weeks,
    first_hour_ms,
    past_hours,
)

HOURS = 48


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[tuple[Gateway, httpx.AsyncClient]]:
    path = tmp_path / "site.yaml"
    path.write_text(site_yaml(
        {"z": [machine_config("laser-01", "acme", capabilities=["cut"]),
               machine_config("new-01", "acme", capabilities=["cut"])]},
        influx=None, store=tmp_path / "gw.db",
        defaults={**UNIT_DEFAULTS, "offering": "always"}, owners={"acme": {}},
    ))
    gateway = Gateway(load_config(path), clock_ms=Clock(T0))
    # one forecast run at T0: laser-01 seen for two weeks, half idle in its 2nd hour and
    # fully in its 3rd; new-01 has no history yet
    run = Forecasts(first_hour_ms(T0), T0)
    expected = [0.0] * HOURS
    expected[1], expected[2] = 30.0, 60.0
    run.set("laser-01", tuple(expected), (60.0,) * HOURS, first_seen_ms=T0 - 2 * WEEK_MS - HOUR_MS)
    run.set("new-01", (0.0,) * HOURS, (60.0,) * HOURS)
    gateway.forecasts = run
    transport = httpx.ASGITransport(app=create_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield gateway, client
    gateway.store.close()


async def offers(client: httpx.AsyncClient, who: dict[str, str], start: int, end: int
                 ) -> dict[str, list[dict[str, Any]]]:
    answer = await client.get(f"/api/offers?from={start}&to={end}", headers=who)
    assert answer.status_code == 200, answer.text
    return {o["machine"]: o["slots"] for o in answer.json()}


async def test_each_slot_carries_the_forecast_for_every_role(
    site: tuple[Gateway, httpx.AsyncClient],
) -> None:
    gateway, client = site
    first = first_hour_ms(T0)
    for who in (bearer(gateway.store, Role.TENANT, "smallco"),
                bearer(gateway.store, Role.OWNER, "acme"), bearer(gateway.store)):
        slots = await offers(client, who, first + HOUR_MS, first + 3 * HOUR_MS)
        [slot] = slots["laser-01"]
        # 30 of 60 and 60 of 60 offered minutes, one hour each: idle three quarters of the slot
        assert slot["forecast"] == {
            "idle_share": 0.75, "weeks": 2, "hours": 2,
            "until": "2026-11-27T04:00:00.000+00:00",
        }
        [fresh] = slots["new-01"]
        assert fresh["forecast"]["idle_share"] is None  # no history: no share, not 0
        assert fresh["forecast"]["weeks"] == 0


async def test_beyond_the_forecast_a_slot_has_none(
    site: tuple[Gateway, httpx.AsyncClient],
) -> None:
    gateway, client = site
    first = first_hour_ms(T0)
    tenant = bearer(gateway.store, Role.TENANT, "smallco")
    later = await offers(client, tenant, first + 50 * HOUR_MS, first + 52 * HOUR_MS)
    assert [s["forecast"] for s in later["laser-01"]] == [None]
    # a slot reaching past the forecast says how far it is covered
    across = await offers(client, tenant, first + 46 * HOUR_MS, first + 50 * HOUR_MS)
    [slot] = across["laser-01"]
    assert slot["forecast"]["hours"] == 2
    assert slot["forecast"]["until"] == "2026-11-29T01:00:00.000+00:00"


def test_the_share_weighs_each_hour_by_the_part_of_the_slot_it_holds() -> None:
    first = first_hour_ms(T0)
    run = Forecasts(first, T0)
    # hour 0 always idle, hour 1 never, hour 2 half: with four weeks of history
    run.set("m", (60.0, 0.0, 20.0), (60.0, 60.0, 40.0), first_seen_ms=T0 - 5 * WEEK_MS)
    # 45 min of the always-idle hour, 15 min of the never-idle one
    advice = forecast_json(run.outlook("m", first + HOUR_MS // 4, first + 5 * HOUR_MS // 4))
    assert advice is not None
    assert (advice["idle_share"], advice["weeks"], advice["hours"]) == (0.75, 4, 2)
    # past the forecast's end: covered up to there
    tail = run.outlook("m", first + 2 * HOUR_MS, first + 9 * HOUR_MS)
    assert tail is not None
    assert (tail.idle_share, tail.hours, tail.until_ms) == (0.5, 1, first + 3 * HOUR_MS)
    assert run.outlook("m", first + 3 * HOUR_MS, first + 4 * HOUR_MS) is None
    assert run.outlook("unknown", first, first + HOUR_MS) is None
    # hours without history add no share: none at all is no share, not 0
    young = Forecasts(first, T0)
    young.set("m", (0.0,) * 3, (60.0,) * 3, first_seen_ms=T0 - HOUR_MS)
    assert young.outlook("m", first, first + 2 * HOUR_MS) == (None, 0, 2, first + 2 * HOUR_MS)


def test_a_forecast_hour_says_how_many_weeks_it_rests_on() -> None:
    run = Forecasts(first_hour_ms(T0), T0)
    run.set("m", (1.0,) * 3, (60.0,) * 3, first_seen_ms=T0 - 2 * WEEK_MS)
    run.set("young", (0.0,) * 3, (60.0,) * 3)
    assert [h.weeks for h in run["m"]] == [2, 2, 2]
    assert [h.weeks for h in run["young"]] == [0, 0, 0]


def test_the_weeks_counted_are_the_weeks_averaged() -> None:
    # evidence_weeks counts what past_hours lists (and expected_minutes averages), fast
    for seen_back in range(0, 6 * WEEK_MS, 5 * HOUR_MS + 7):
        for ahead in (-HOUR_MS, 0, HOUR_MS, 47 * HOUR_MS, WEEK_MS - HOUR_MS, WEEK_MS + 3):
            start = T0 + ahead
            seen = T0 - seen_back
            expected = len(past_hours(start, T0, seen, 4)) if start >= seen else 0
            assert evidence_weeks(start, T0, seen, 4) == expected, (seen_back, ahead)
    # and the outlook's inline count agrees with it, hour by hour
    first = first_hour_ms(T0)
    for seen_back in range(0, 6 * WEEK_MS, 11 * HOUR_MS + 7):
        run = Forecasts(first, T0)
        run.set("m", (30.0,) * 48, (60.0,) * 48, first_seen_ms=T0 - seen_back)
        for i in range(48):
            outlook = run.outlook("m", first + i * HOUR_MS, first + (i + 1) * HOUR_MS)
            assert outlook is not None
            assert outlook.weeks == run["m"][i].weeks, (seen_back, i)

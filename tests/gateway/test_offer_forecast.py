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
from pilotline.gateway.api.forecast_advice import slot_forecast
from pilotline.gateway.config import load_config
from pilotline.gateway.forecasts import Forecasts
from pilotline.gateway.service import Gateway
from pilotline.gateway.store.tokens import Role
from pilotline.rules.forecast import HOUR_MS, WEEK_MS, HourForecast, first_hour_ms

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
    hours = [HourForecast(0, 60.0, 60.0, 4), HourForecast(HOUR_MS, 0.0, 60.0, 3),
             HourForecast(2 * HOUR_MS, 20.0, 40.0, 0)]
    # 45 min of an always-idle hour, 15 min of a never-idle one
    advice = slot_forecast(hours, HOUR_MS // 4, HOUR_MS + HOUR_MS // 4)
    assert advice is not None
    assert (advice.idle_share, advice.weeks, advice.hours) == (0.75, 3, 2)
    # an hour without history adds no share, and lowers `weeks` to 0
    mixed = slot_forecast(hours, HOUR_MS, 3 * HOUR_MS)
    assert mixed is not None
    assert (mixed.idle_share, mixed.weeks) == (0.0, 0)
    assert slot_forecast(hours, 5 * HOUR_MS, 6 * HOUR_MS) is None


def test_a_forecast_hour_says_how_many_weeks_it_rests_on() -> None:
    run = Forecasts(first_hour_ms(T0), T0)
    run.set("m", (1.0,) * 3, (60.0,) * 3, first_seen_ms=T0 - 2 * WEEK_MS)
    run.set("young", (0.0,) * 3, (60.0,) * 3)
    assert [h.weeks for h in run["m"]] == [2, 2, 2]
    assert [h.weeks for h in run["young"]] == [0, 0, 0]

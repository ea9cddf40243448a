"""Bad input to ``POST /api/reservations`` (issue 15, "Bad input and faults"), through the app
in-process with a fake clock: reversed and zero-length intervals, times without a zone, times
across a daylight-saving change, a machine that is not offered, a tenant over its quota, an
unknown or revoked token, a reused Idempotency-Key. Each gets a clear answer, and none leaves
a row behind (``written`` counts the three booking tables). The gateway killed between the
check and the answer: tests/integration/test_booking_crash.py. The table of every case and
its test: docs/reliability.md, "Bad booking input and faults"."""

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
START = T0 + 2 * HOUR  # the clock stands at T0, 2026-11-27 (a Friday) 00:00 UTC
NIGHTS = {"weekly": [{"days": ["sat"], "from": "20:00", "to": "08:00"}]}
"""Saturday 20:00 to Sunday 08:00, Paris time: the nights of both daylight-saving changes."""

# 2026: Paris moves from +01:00 to +02:00 on Sunday 29 March at 02:00, back on 25 October
MARCH = 1_773_964_800_000  # 2026-03-20T00:00Z
OCTOBER = 1_792_454_400_000  # 2026-10-20T00:00Z


class Site:
    def __init__(self, gateway: Gateway, client: httpx.AsyncClient, clock: Clock) -> None:
        self.gateway = gateway
        self.client = client
        self.clock = clock
        self.smallco = bearer(gateway.store, Role.TENANT, "smallco")
        self.bigco = bearer(gateway.store, Role.TENANT, "bigco")

    async def book(
        self, who: dict[str, str], machine: str, start: int | str, end: int | str,
        **headers: str,
    ) -> httpx.Response:
        return await self.client.post(
            "/api/reservations", headers={**who, **headers},
            json={"machine": machine, "start": start, "end": end},
        )

    def written(self) -> tuple[int, int, int]:
        """Rows of reservations, their events and idempotency keys."""
        db = self.gateway.store._db
        return tuple(  # type: ignore[return-value]
            int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # nosec B608
            for table in ("reservations", "reservation_events", "idempotency")
        )


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    path = tmp_path / "site.yaml"
    path.write_text(
        site_yaml(
            {"z": [
                machine_config("laser-01", offering="always",
                               booking={"min_length_s": 3600,
                                        "quota": {"hours": 3, "per": "week"}}),
                machine_config("night-01", offering=NIGHTS,
                               booking={"max_length_s": 12 * 3600}),
                machine_config("dark-01", "umbra"),  # no offering applies: never offered
            ]},
            influx=None,
            store=tmp_path / "gw.db",
            timezone="Europe/Paris",
            defaults=UNIT_DEFAULTS,
        )
    )
    clock = Clock(T0)
    gateway = Gateway(load_config(path), clock_ms=clock)
    transport = httpx.ASGITransport(app=create_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield Site(gateway, client, clock)
    gateway.store.close()


def problem(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = answer.json()
    return body


@pytest.mark.parametrize("end", [START, START - HOUR], ids=["zero-length", "reversed"])
async def test_an_interval_that_does_not_run_forward_is_a_422_naming_end(
    site: Site, end: int
) -> None:
    body = problem(await site.book(site.smallco, "laser-01", START, end), 422)
    assert body["rule"] == "interval"
    assert body["detail"] == "the end must come after the start"
    assert [e["loc"] for e in body["errors"]] == [["body", "end"]]
    assert site.written() == (0, 0, 0)


async def test_a_time_without_a_zone_is_a_422_asking_for_one(site: Site) -> None:
    body = problem(
        await site.book(site.smallco, "laser-01", "2026-12-05T10:00", "2026-12-05T12:00+01:00"),
        422,
    )
    assert [e["loc"] for e in body["errors"]] == [["body", "start"]]
    assert "'2026-12-05T10:00' has no time zone: add Z or an offset" in body["errors"][0]["msg"]
    assert site.written() == (0, 0, 0)


async def test_across_the_spring_change_the_local_hours_decide_and_an_hour_is_missing(
    site: Site,
) -> None:
    site.clock.set(MARCH)
    offers = (await site.client.get(
        "/api/offers?from=2026-03-28T00:00:00Z&to=2026-03-30T00:00:00Z", headers=site.smallco
    )).json()
    night = next(o for o in offers if o["machine"] == "night-01")
    # Saturday 20:00 +01:00 to Sunday 08:00 +02:00: 11 hours, not 12
    assert [(s["start"], s["end"]) for s in night["slots"]] == [
        ("2026-03-28T19:00:00.000+00:00", "2026-03-29T06:00:00.000+00:00")
    ]
    # 08:00 +01:00 is 09:00 in Paris that morning: an hour past the offer
    late = await site.book(site.smallco, "night-01", "2026-03-28T20:00:00+01:00",
                           "2026-03-29T08:00:00+01:00")
    assert problem(late, 422)["rule"] == "offer"
    early = await site.book(site.smallco, "night-01", "2026-03-28T19:45:00+01:00",
                            "2026-03-29T08:00:00+02:00")
    assert problem(early, 422)["rule"] == "offer"
    assert site.written() == (0, 0, 0)
    whole = await site.book(site.smallco, "night-01", "2026-03-28T20:00:00+01:00",
                            "2026-03-29T08:00:00+02:00")
    assert whole.status_code == 201, whole.text
    assert whole.json()["end_ms"] - whole.json()["start_ms"] == 11 * HOUR


async def test_across_the_autumn_change_the_night_is_an_hour_longer(site: Site) -> None:
    site.clock.set(OCTOBER)
    # Saturday 20:00 +02:00 to Sunday 08:00 +01:00: 13 hours, over the 12 h maximum
    whole = await site.book(site.smallco, "night-01", "2026-10-24T20:00:00+02:00",
                            "2026-10-25T08:00:00+01:00")
    body = problem(whole, 422)
    assert (body["rule"], body["detail"]) == ("length", "at most 12 h per booking")
    twelve = await site.book(site.smallco, "night-01", "2026-10-24T20:00:00+02:00",
                             "2026-10-25T07:00:00+01:00")
    assert twelve.status_code == 201, twelve.text
    assert twelve.json()["end_ms"] - twelve.json()["start_ms"] == 12 * HOUR
    # a week later, after the change, the same night is 12 hours again
    other = await site.book(site.bigco, "night-01", "2026-10-31T20:00:00+01:00",
                            "2026-11-01T08:00:00+01:00")
    assert other.status_code == 201, other.text


async def test_a_machine_not_offered_is_a_422_offer_saying_where_to_look(site: Site) -> None:
    for machine in ("dark-01", "no-such-machine"):
        body = problem(await site.book(site.smallco, machine, START, START + HOUR), 422)
        assert body["rule"] == "offer"
        assert body["detail"] == (
            f"{machine!r} is not offered for booking: GET /api/offers lists the machines "
            "and times you may book"
        )
        assert [e["loc"] for e in body["errors"]] == [["body", "machine"]]
    # offered, but not at that time: the nearest offered slots of the same length
    body = problem(await site.book(site.smallco, "night-01", START, START + HOUR), 422)
    assert body["rule"] == "offer"
    assert body["detail"] == ("the machine is not offered for all of that time: pick one of "
                              "the alternatives, or see GET /api/offers")
    # Friday 02:00 UTC asked; the nearest hour the nights offer: Saturday 20:00 Paris
    assert body["alternatives"][0]["start"] == "2026-11-28T19:00:00.000+00:00"
    assert all(a["end_ms"] - a["start_ms"] == HOUR for a in body["alternatives"])
    assert site.written() == (0, 0, 0)


async def test_over_the_quota_the_answer_says_what_is_left_in_the_period(site: Site) -> None:
    first = await site.book(site.smallco, "laser-01", START, START + 2 * HOUR)
    assert first.status_code == 201, first.text
    body = problem(await site.book(site.smallco, "laser-01", START + 4 * HOUR,
                                   START + 6 * HOUR), 422)
    assert body["rule"] == "quota"
    # T0 is a Friday: its week began on Monday 23 November (UTC)
    assert body["detail"] == (
        "over the quota of 3 h per week: 60 min left in the week from 2026-11-23 (UTC)"
    )
    # another tenant's quota is its own; next week's is whole again
    assert (await site.book(site.bigco, "laser-01", START + 4 * HOUR,
                            START + 6 * HOUR)).status_code == 201
    assert (await site.book(site.smallco, "laser-01", START + 7 * 24 * HOUR,
                            START + 7 * 24 * HOUR + 3 * HOUR)).status_code == 201
    assert site.written() == (3, 3, 0)


async def test_an_unknown_or_revoked_token_is_a_401_and_writes_nothing(site: Site) -> None:
    tokens = site.gateway.store.tokens()
    secret = tokens.create("gone", Role.TENANT, "smallco", now_ms=0)
    assert tokens.revoke("gone", now_ms=1)
    for headers in ({"Authorization": f"Bearer {secret}"},
                    {"Authorization": "Bearer plt_0badc0de_" + "A" * 43}, {}):
        answer = await site.book(headers, "laser-01", START, START + HOUR)
        assert answer.status_code == 401, answer.text
        assert answer.headers["www-authenticate"].startswith("Bearer")
    assert site.written() == (0, 0, 0)


async def test_an_idempotency_key_is_per_tenant_and_kept_only_for_a_booking(site: Site) -> None:
    key = {"Idempotency-Key": "checkout-7"}
    # a refused request keeps no key: the same key books once the request is right
    assert problem(await site.book(site.smallco, "laser-01", START, START, **key),
                   422)["rule"] == "interval"
    first = await site.book(site.smallco, "laser-01", START, START + HOUR, **key)
    assert first.status_code == 201, first.text
    # the same key with another body: refused, saying what to do, and nothing written
    other = problem(await site.book(site.smallco, "laser-01", START + 2 * HOUR,
                                    START + 3 * HOUR, **key), 422)
    assert other["rule"] == "idempotency"
    assert other["detail"] == ("this Idempotency-Key was already used for a different "
                               "request: send the same request again, or use a new key")
    # another tenant's key of the same name is its own
    theirs = await site.book(site.bigco, "laser-01", START + 2 * HOUR, START + 3 * HOUR, **key)
    assert theirs.status_code == 201, theirs.text
    # the retry answers the reservation as it is now, after its hold ran out
    site.clock.ms = T0 + 11 * 60_000
    again = await site.book(site.smallco, "laser-01", START, START + HOUR, **key)
    assert (again.status_code, again.json()["id"]) == (200, first.json()["id"])
    assert again.json()["status"] == "expired"
    assert site.written() == (2, 4, 2)  # two holds, two expiries, two keys

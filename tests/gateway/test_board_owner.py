"""The owner view of the board (issue 16): an owner sees its own machines and the bookings
on them with their tenants and nothing of another owner's; it approves or rejects a request
through a form that needs the session's CSRF token; the utilization table shows the API's
exact figures; the policy is the catalog's. In a real browser:
tests/integration/test_board_owner_browser.py."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from tests.fakes import T0, Clock
from tests.sites import UNIT_DEFAULTS, machine_config, site_yaml

from pilotline.gateway.api.app import create_app
from pilotline.gateway.board.owner import WEEK_MS, weekly_hours
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway
from pilotline.gateway.store.tokens import Role

BASE = "http://127.0.0.1:8080"
HOUR = 3_600_000


@dataclass
class Site:
    gateway: Gateway
    client: httpx.AsyncClient
    clock: Clock

    def token(self, role: Role, subject: str | None = None) -> str:
        return self.gateway.store.tokens().create(
            f"{role.value}-{subject or 'x'}", role, subject, now_ms=T0
        )

    async def sign_in(self, token: str) -> None:
        page = await self.client.get("/board/sign-in")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        answer = await self.client.post(
            "/board/sign-in", data={"token": token, "csrf": csrf.group(1)},
            headers={"Origin": BASE},
        )
        assert answer.status_code == 303

    async def book(self, tenant: str, machine: str, start: int, hours: int = 2) -> str:
        """A tenant's booking through the API (held, then confirmed or requested)."""
        auth = {"Authorization": f"Bearer {self.token(Role.TENANT, tenant)}"}
        held = await self.client.post(
            "/api/reservations", headers=auth,
            json={"machine": machine, "start": start, "end": start + hours * HOUR,
                  "purpose": f"{tenant} run"},
        )
        assert held.status_code == 201, held.text
        rid: str = held.json()["id"]
        confirmed = await self.client.post(f"/api/reservations/{rid}/confirm", headers=auth)
        assert confirmed.status_code == 200, confirmed.text
        return rid

    def status(self, rid: str) -> str | None:
        stored = self.gateway.store.reservations().get(rid)
        return None if stored is None else stored.status.value

    async def csrf(self) -> str:
        page = await self.client.get("/board/owner")
        found = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert found is not None, page.text
        return found.group(1)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    (tmp_path / "site.yaml").write_text(site_yaml(
        {"photonics": [machine_config("laser-01", "acme"), machine_config("cam-02", "lumen")]},
        store=tmp_path / "gw.db",
        timezone="Europe/Paris",
        defaults={**UNIT_DEFAULTS, "offering": "always",
                  "booking": {"step_s": "15m", "min_notice_s": 0}},
        owners={"acme": {"booking": {"approval": True}}, "lumen": {}},
    ))
    clock = Clock(T0)
    gateway = Gateway(load_config(tmp_path / "site.yaml"), clock_ms=clock,
                      monotonic_ms=clock.monotonic)
    transport = httpx.ASGITransport(app=create_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield Site(gateway, client, clock)
    gateway.store.close()


async def test_an_owner_sees_its_machines_and_their_tenants_and_nothing_of_another_owner(
    site: Site,
) -> None:
    await site.book("smallco", "laser-01", T0 + 3 * HOUR)
    await site.book("bigco", "cam-02", T0 + 5 * HOUR)
    await site.sign_in(site.token(Role.OWNER, "acme"))

    page = await site.client.get("/board/owner")

    assert page.status_code == 200
    assert "laser-01" in page.text
    assert "smallco" in page.text  # the tenant of a booking on its machine, named
    assert "cam-02" not in page.text  # lumen's machine ...
    assert "bigco" not in page.text  # ... and lumen's tenant are not in the HTML at all
    assert "Europe/Paris" in page.text


async def test_an_owner_approves_a_request_with_a_note(site: Site) -> None:
    rid = await site.book("smallco", "laser-01", T0 + 3 * HOUR)
    await site.sign_in(site.token(Role.OWNER, "acme"))
    page = await site.client.get("/board/owner")
    assert f'action="/board/owner/reservations/{rid}/approve"' in page.text

    answer = await site.client.post(
        f"/board/owner/reservations/{rid}/approve",
        data={"csrf": await site.csrf(), "note": "see you then"}, headers={"Origin": BASE},
    )

    assert (answer.status_code, answer.headers["location"]) == (
        303, f"/board/owner?done=approved&id={rid}#requests")
    assert site.status(rid) == "confirmed"
    events = site.gateway.store.reservations().events(rid)
    assert events[-1][2:] == ("owner-acme", "see you then")
    after = await site.client.get(answer.headers["location"])
    assert f"Request {rid} approved" in after.text
    assert f'action="/board/owner/reservations/{rid}/approve"' not in after.text
    assert re.search(rf'id="booking-{rid}">.*?confirmed', after.text, re.S)


async def test_an_owner_rejects_a_request(site: Site) -> None:
    rid = await site.book("smallco", "laser-01", T0 + 3 * HOUR)
    await site.sign_in(site.token(Role.OWNER, "acme"))
    answer = await site.client.post(
        f"/board/owner/reservations/{rid}/reject", data={"csrf": await site.csrf()},
    )
    assert answer.status_code == 303
    assert site.status(rid) == "rejected"


async def test_an_approval_without_the_csrf_token_or_from_another_site_is_refused(
    site: Site,
) -> None:
    rid = await site.book("smallco", "laser-01", T0 + 3 * HOUR)
    await site.sign_in(site.token(Role.OWNER, "acme"))
    forged = await site.client.post(f"/board/owner/reservations/{rid}/approve",
                                    data={"csrf": "forged"})
    cross_site = await site.client.post(
        f"/board/owner/reservations/{rid}/approve", data={"csrf": await site.csrf()},
        headers={"Origin": "https://evil.example"},
    )
    assert (forged.status_code, cross_site.status_code) == (403, 403)
    assert site.status(rid) == "requested"


async def test_an_owner_cannot_answer_another_owners_request(site: Site) -> None:
    """lumen answering a request on acme's laser-01: the API says 404 (a reservation lumen
    may not see), the board says it was not approved, and nothing changes."""
    rid = await site.book("smallco", "laser-01", T0 + 3 * HOUR)
    await site.sign_in(site.token(Role.OWNER, "lumen"))
    answer = await site.client.post(
        f"/board/owner/reservations/{rid}/approve", data={"csrf": await site.csrf()},
    )
    assert answer.status_code == 404
    assert "was not approved" in answer.text
    assert site.status(rid) == "requested"


async def test_the_utilization_and_the_policy_are_the_apis_own(site: Site) -> None:
    await site.sign_in(site.token(Role.OWNER, "acme"))
    auth = {"Authorization": f"Bearer {site.token(Role.OPERATOR)}"}
    api = (await site.client.get("/api/utilization", headers=auth,
                                 params={"from": T0 - WEEK_MS, "to": T0})).json()
    catalog = (await site.client.get("/api/catalog", headers=auth)).json()

    page = (await site.client.get("/board/owner")).text

    laser = next(m for m in api["machines"] if m["machine"] == "laser-01")
    section = page.split('id="utilization"', 1)[1].split("</section>", 1)[0]
    for state, share in laser["shares"].items():
        shown = "< 0.1 %" if 0 < share < 0.0005 else f"{100 * share:.1f} %"
        assert f'data-state="{state}">{shown}<br>' in section, state
    terms = next(e for e in catalog if e["machine"] == "laser-01")
    assert terms["offering"] in page
    assert terms["booking"]["rules"] in page
    assert "you approve each booking" in page


def test_weekly_hours_say_offered_booked_and_used_per_period() -> None:
    now = T0
    offers = {"m": {"slots": [{"start_ms": now + HOUR, "end_ms": now + 4 * HOUR}]}}
    bookings = [
        {"machine": "m", "status": "confirmed", "start_ms": now + 5 * HOUR,
         "end_ms": now + 7 * HOUR},
        {"machine": "m", "status": "cancelled", "start_ms": now + 8 * HOUR,
         "end_ms": now + 9 * HOUR},
    ]
    lines = [
        {"machine": "m", "status": "completed", "start": "2026-11-25T10:00:00+00:00",
         "booked_min": 120.0, "used_min": 90.0},
        {"machine": "m", "status": "cancelled", "start": "2026-11-25T14:00:00+00:00",
         "booked_min": 60.0, "used_min": 0.0},
    ]
    utilization = [{"machines": [{"machine": "m", "seconds": {"running": 36_000.0,
                                                             "idle": 7_200.0}}]}, {"machines": []}]

    weeks = weekly_hours(["m"], now, offers=offers, bookings=bookings, lines=lines,
                         utilization=utilization, tz=ZoneInfo("UTC"))["m"]

    ahead, last, before = weeks
    assert (ahead.offered_h, ahead.booked_h, ahead.used_h) == (5.0, 2.0, None)
    assert (last.offered_h, last.booked_h, last.used_h) == (None, 2.0, 1.5)
    assert (last.running_h, last.idle_h) == (10.0, 2.0)
    assert (before.booked_h, before.running_h) == (0.0, None)

"""The board's tenant view (issue 16): the week timeline of offered, busy and own time, the
search, booking (hold, confirm, cancel) with times read in the site's zone, a refusal in
words, the usage statement and the calendar link; another tenant's booking never in the
HTML, and no action without the session's CSRF token. In a real browser:
tests/integration/test_board_tenant_browser.py."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from tests.fakes import T0, Clock
from tests.sites import UNIT_DEFAULTS, machine_config, site_yaml

from pilotline.gateway.api.app import create_app
from pilotline.gateway.board.tenant_week import QUARTERS, days_of, row_of
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway
from pilotline.gateway.store.tokens import Role
from pilotline.rules.booking import Status

BASE = "http://127.0.0.1:8080"
PARIS = ZoneInfo("Europe/Paris")
# T0 is Fri 2026-11-27 00:00 UTC, 01:00 in Paris (UTC+1 in winter)


def paris_ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=PARIS).timestamp() * 1000)


@dataclass
class Site:
    gateway: Gateway
    client: httpx.AsyncClient
    clock: Clock

    def token(self, subject: str) -> str:
        return self.gateway.store.tokens().create(f"t-{subject}", Role.TENANT, subject,
                                                  now_ms=T0)

    async def sign_in(self, subject: str) -> None:
        page = await self.client.get("/board/sign-in")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        answer = await self.client.post(
            "/board/sign-in", data={"token": self.token(subject), "csrf": csrf.group(1)},
            headers={"Origin": BASE},
        )
        assert answer.status_code == 303

    async def form(self, path: str = "/board/tenant") -> tuple[str, str]:
        """The page's CSRF token and the booking form's idempotency key."""
        page = await self.client.get(path)
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        key = re.search(r'name="key" value="([^"]+)"', page.text)
        assert csrf is not None, page.text
        assert key is not None, page.text
        return csrf.group(1), key.group(1)

    async def book(
        self, machine: str, start: str, end: str, purpose: str = "", *, key: str | None = None,
        csrf: str | None = None,
    ) -> httpx.Response:
        token, fresh = await self.form()
        return await self.client.post("/board/tenant/book", data={
            "csrf": token if csrf is None else csrf, "key": key or fresh, "machine": machine,
            "start": start, "end": end, "purpose": purpose,
        }, headers={"Origin": BASE})

    def reservations(self) -> list[object]:
        return list(self.gateway.store.reservations().list())


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    (tmp_path / "site.yaml").write_text(site_yaml(
        {"photonics": [
            machine_config("laser-01", "acme", capabilities=["laser-cutting"]),
            machine_config("cam-02", "lumen", capabilities=["optical-inspection"]),
        ]},
        store=tmp_path / "gw.db",
        timezone="Europe/Paris",
        defaults={**UNIT_DEFAULTS, "offering": "always"},
    ))
    clock = Clock(T0)
    gateway = Gateway(load_config(tmp_path / "site.yaml"), clock_ms=clock,
                      monotonic_ms=clock.monotonic)
    transport = httpx.ASGITransport(app=create_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield Site(gateway, client, clock)
    gateway.store.close()


async def bigco_books(site: Site, start: str, end: str, purpose: str) -> str:
    """Another tenant's booking, made through the API with its own bearer token."""
    answer = await site.client.post(
        "/api/reservations",
        json={"machine": "laser-01", "start": f"{start}+01:00", "end": f"{end}+01:00",
              "purpose": purpose},
        headers={"Authorization": f"Bearer {site.token('bigco')}"},
    )
    assert answer.status_code == 201, answer.text
    rid: str = answer.json()["id"]
    return rid


async def test_the_page_shows_a_week_of_offered_time_per_machine_in_the_sites_zone(
    site: Site,
) -> None:
    await site.sign_in("smallco")
    page = await site.client.get("/board/tenant")
    assert page.status_code == 200
    html = page.text
    assert "laser-01" in html
    assert "cam-02" in html
    assert "Europe/Paris" in html
    for day in ("Fri 27 Nov", "Sat 28 Nov", "Thu 3 Dec"):
        assert day in html
    assert "Fri 4 Dec" not in html  # seven days
    # offered time is a link that fills the booking form, on the site's 15-minute grid
    link = re.search(r'<a class="seg offered f(\d+) t(\d+)" href="([^"]+)"', html)
    assert link is not None
    assert "machine=" in link.group(3)
    assert "start=2026-11-27T01%3A00" in link.group(3)
    assert (int(link.group(1)), int(link.group(2))) == (4, QUARTERS)  # from now, 01:00 Paris


async def test_a_search_by_capability_shows_only_the_machines_that_can(site: Site) -> None:
    await site.sign_in("smallco")
    page = await site.client.get("/board/tenant", params={"capability": "laser-cutting"})
    timeline = page.text.split('id="timeline"')[1].split('id="book"')[0]
    assert "laser-01" in timeline
    assert "cam-02" not in timeline
    # the htmx request of the search form answers the timeline alone
    part = await site.client.get(
        "/board/tenant", params={"capability": "optical-inspection", "days": "3"},
        headers={"HX-Request": "true", "HX-Target": "timeline"},
    )
    assert "<html" not in part.text
    assert "cam-02" in part.text
    assert "laser-01" not in part.text
    assert "Sun 29 Nov" in part.text
    assert "Mon 30 Nov" not in part.text
    assert 'hx-swap-oob="true"' in part.text


async def test_a_tenant_holds_then_confirms_a_slot_typed_in_the_sites_zone(
    site: Site,
) -> None:
    await site.sign_in("smallco")
    held = await site.book("laser-01", "2026-11-27T10:00", "2026-11-27T11:30", "prototype")
    assert held.status_code == 303
    location = held.headers["location"]
    assert "notice=held" in location
    (res,) = site.gateway.store.reservations().list()
    assert (res.start_ms, res.end_ms) == (paris_ms("2026-11-27T10:00"),
                                          paris_ms("2026-11-27T11:30"))
    assert res.status is Status.HELD
    page = await site.client.get(location)
    assert "Confirm your hold" in page.text
    assert "Fri 27 Nov 10:00" in page.text
    csrf, _ = await site.form()
    confirmed = await site.client.post(
        f"/board/tenant/reservations/{res.id}/confirm", data={"csrf": csrf},
        headers={"Origin": BASE},
    )
    assert confirmed.status_code == 303
    assert "notice=confirmed" in confirmed.headers["location"]
    assert site.gateway.store.reservations().get(res.id).status is Status.CONFIRMED  # type: ignore[union-attr]
    page = await site.client.get("/board/tenant")
    assert f'id="r-{res.id}"' in page.text
    assert 'class="booking confirmed"' in page.text
    # on the timeline as the tenant's own, 10:00 to 11:30 is quarters 40 to 46
    assert re.search(rf'class="seg mine confirmed f40 t46" href="#r-{res.id}"', page.text)


async def test_a_double_submit_of_one_form_books_once(site: Site) -> None:
    await site.sign_in("smallco")
    csrf, key = await site.form()
    answers = [
        await site.client.post("/board/tenant/book", data={
            "csrf": csrf, "key": key, "machine": "laser-01", "start": "2026-11-28T08:00",
            "end": "2026-11-28T09:00", "purpose": ""}, headers={"Origin": BASE})
        for _ in range(2)
    ]
    assert [a.status_code for a in answers] == [303, 303]
    assert answers[0].headers["location"] == answers[1].headers["location"]
    assert len(site.reservations()) == 1


async def test_another_tenants_booking_is_busy_time_and_nothing_more(site: Site) -> None:
    rid = await bigco_books(site, "2026-11-28T14:00", "2026-11-28T16:00", "secret-widget-run")
    await site.sign_in("smallco")
    html = (await site.client.get("/board/tenant", params={"from": "2026-11-28"})).text
    assert rid not in html
    assert "bigco" not in html
    assert "secret-widget-run" not in html
    # its time is busy on laser-01's first day: 14:00 to 16:00, quarters 56 to 64
    assert re.search(r'class="seg busy f56 t64" title="busy, Sat 28 Nov 14:00 to 16:00"', html)
    # naming its id in the page's address shows nothing of it either (the API answers 404)
    named = (await site.client.get("/board/tenant", params={"held": rid})).text
    assert rid not in named
    assert "Confirm your hold" not in named


async def test_a_refused_booking_shows_the_rule_in_words(site: Site) -> None:
    await site.sign_in("smallco")
    off_grid = await site.book("laser-01", "2026-11-27T10:05", "2026-11-27T11:00")
    assert off_grid.status_code == 422
    assert "Not booked: Time grid." in off_grid.text
    assert "bookings start and end on a 15 min grid" in off_grid.text
    assert 'value="2026-11-27T10:05"' in off_grid.text  # the form keeps what was typed
    assert site.reservations() == []


async def test_a_conflict_offers_its_alternatives_as_one_click_bookings(site: Site) -> None:
    await bigco_books(site, "2026-11-28T14:00", "2026-11-28T16:00", "theirs")
    await site.sign_in("smallco")
    taken = await site.book("laser-01", "2026-11-28T15:00", "2026-11-28T16:00")
    assert taken.status_code == 409
    assert "Not booked: Taken." in taken.text
    assert "overlaps a live reservation" in taken.text
    choice = re.search(r'<form method="post" action="/board/tenant/book" class="inline">(.*?)'
                       r'</form>', taken.text, re.S)
    assert choice is not None
    fields = dict(re.findall(r'name="(\w+)" value="([^"]*)"', choice.group(1)))
    again = await site.client.post("/board/tenant/book", data=fields,
                                   headers={"Origin": BASE})
    assert again.status_code == 303
    mine = [r for r in site.gateway.store.reservations().list() if r.tenant == "smallco"]
    assert len(mine) == 1
    assert mine[0].end_ms - mine[0].start_ms == 3_600_000


async def test_a_time_the_clocks_skip_is_refused_in_words(site: Site) -> None:
    await site.sign_in("smallco")
    gap = await site.book("laser-01", "2027-03-28T02:30", "2027-03-28T03:30")
    assert gap.status_code == 422
    assert "does not exist in Europe/Paris" in gap.text
    assert site.reservations() == []


async def test_book_and_cancel_without_the_csrf_token_do_nothing(site: Site) -> None:
    await site.sign_in("smallco")
    forged = await site.book("laser-01", "2026-11-27T10:00", "2026-11-27T11:00", csrf="forged")
    assert forged.status_code == 403
    assert site.reservations() == []
    held = await site.book("laser-01", "2026-11-27T10:00", "2026-11-27T11:00")
    rid = held.headers["location"].split("held=")[1]
    for data in ({}, {"csrf": "forged"}):
        refused = await site.client.post(f"/board/tenant/reservations/{rid}/cancel", data=data)
        assert refused.status_code == 403
    csrf, _ = await site.form()
    cross_site = await site.client.post(
        f"/board/tenant/reservations/{rid}/cancel", data={"csrf": csrf},
        headers={"Origin": "https://evil.example"},
    )
    assert cross_site.status_code == 403
    assert site.gateway.store.reservations().get(rid).status is Status.HELD  # type: ignore[union-attr]


async def test_a_tenant_cancels_its_own_booking_and_not_anothers(site: Site) -> None:
    theirs = await bigco_books(site, "2026-11-28T14:00", "2026-11-28T16:00", "theirs")
    await site.sign_in("smallco")
    held = await site.book("laser-01", "2026-11-27T10:00", "2026-11-27T11:00")
    rid = held.headers["location"].split("held=")[1]
    csrf, _ = await site.form()
    cancelled = await site.client.post(f"/board/tenant/reservations/{rid}/cancel",
                                       data={"csrf": csrf}, headers={"Origin": BASE})
    assert (cancelled.status_code, cancelled.headers["location"]) == (
        303, "/board/tenant?notice=cancelled")
    assert site.gateway.store.reservations().get(rid).status is Status.CANCELLED  # type: ignore[union-attr]
    other = await site.client.post(f"/board/tenant/reservations/{theirs}/cancel",
                                   data={"csrf": csrf}, headers={"Origin": BASE})
    assert other.status_code == 404
    assert site.gateway.store.reservations().get(theirs).status is Status.HELD  # type: ignore[union-attr]


async def test_the_calendar_link_is_shown_once_and_serves_own_bookings(site: Site) -> None:
    await bigco_books(site, "2026-11-28T14:00", "2026-11-28T16:00", "theirs")
    await site.sign_in("smallco")
    held = await site.book("laser-01", "2026-11-27T10:00", "2026-11-27T11:00", "my-run")
    rid = held.headers["location"].split("held=")[1]
    csrf, _ = await site.form()
    await site.client.post(f"/board/tenant/reservations/{rid}/confirm", data={"csrf": csrf},
                           headers={"Origin": BASE})
    page = await site.client.post("/board/tenant/feed", data={"csrf": csrf},
                                  headers={"Origin": BASE})
    assert page.status_code == 200
    url = re.search(r'id="feed-url" type="text" readonly value="([^"]+)"', page.text)
    assert url is not None
    assert url.group(1).startswith(f"{BASE}/ical/")
    assert 'data-copy="feed-url"' in page.text
    calendar = await site.client.get(url.group(1))
    assert calendar.status_code == 200
    assert "my-run" in calendar.text
    assert "theirs" not in calendar.text
    assert "feed-url" not in (await site.client.get("/board/tenant")).text  # shown once


async def test_the_usage_statement_has_totals_and_a_csv(site: Site) -> None:
    await site.sign_in("smallco")
    held = await site.book("laser-01", "2026-11-27T10:00", "2026-11-27T11:00")
    rid = held.headers["location"].split("held=")[1]
    csrf, _ = await site.form()
    await site.client.post(f"/board/tenant/reservations/{rid}/confirm", data={"csrf": csrf},
                           headers={"Origin": BASE})
    site.clock.ms = T0 + 12 * 3_600_000  # past its end
    page = await site.client.get("/board/tenant")
    usage = page.text.split('id="usage"')[1]
    assert "Total, 1 booking" in usage
    assert "1:00" in usage  # booked one hour
    csv = await site.client.get("/board/tenant/usage.csv")
    assert csv.status_code == 200
    assert csv.headers["content-type"].startswith("text/csv")
    assert "attachment" in csv.headers["content-disposition"]
    assert csv.text.splitlines()[0].startswith("id,machine,tenant")
    assert rid in csv.text


def test_the_timeline_cuts_segments_at_local_midnight_and_marks_busy_time() -> None:
    days = days_of(datetime(2026, 11, 27).date(), 2, PARIS)
    offer = {"machine": "m", "zone": "z", "capabilities": [], "owner": None,
             "slots": [{"start_ms": paris_ms("2026-11-27T20:00"),
                        "end_ms": paris_ms("2026-11-28T06:00")}]}
    hours = [(paris_ms("2026-11-27T18:00"), paris_ms("2026-11-28T06:00"))]
    row = row_of(offer, hours, [], days, now_ms=paris_ms("2026-11-27T12:00"), tz=PARIS)
    first, second = row.days
    kinds = {(s.kind, s.first, s.last) for s in first}
    assert ("offered", 80, 96) in kinds
    assert ("busy", 72, 80) in kinds
    assert ("past", 0, 48) in kinds
    assert {(s.kind, s.first, s.last) for s in second} == {("offered", 0, 24)}
    assert row.offered_ms == 10 * 3_600_000

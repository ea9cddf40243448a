"""The board's tenant view in a real browser (issue 16): Debian's Chromium through Playwright
against a real gateway (real Mosquitto, simulated machines: tests/board_site.py). A tenant
finds an offered slot by capability, holds and confirms it, sees it on its timeline and in
its calendar feed, and sees nothing of another tenant's booking but busy time. The test
takes the screenshot of the view in docs/board-tenant.png."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from tests.board_site import board_site, sign_in

from pilotline.demo.broker import MosquittoBroker

pytestmark = pytest.mark.integration

SCREENSHOT = Path(__file__).parents[2] / "docs" / "board-tenant.png"
PARIS = ZoneInfo("Europe/Paris")  # board_site's time zone


async def test_a_tenant_finds_books_and_sees_its_slot_and_nothing_of_anothers(
    tmp_path: Path, broker: MosquittoBroker, browser: Any
) -> None:
    async with board_site(tmp_path, broker) as site:
        # another tenant books laser-01 tomorrow 10:00 to 12:00 (Paris), through the API
        tomorrow = datetime.now(PARIS).date() + timedelta(days=1)
        ten = datetime.combine(tomorrow, datetime.min.time(), PARIS) + timedelta(hours=10)
        async with httpx.AsyncClient(base_url=site.url) as api:
            theirs = await api.post(
                "/api/reservations",
                json={"machine": "laser-01", "start": ten.isoformat(),
                      "end": (ten + timedelta(hours=2)).isoformat(),
                      "purpose": "bigco-secret-run"},
                headers={"Authorization": f"Bearer {site.tokens['bigco']}"},
            )
            assert theirs.status_code == 201, theirs.text
        their_id = theirs.json()["id"]

        page = await browser.new_page(base_url=site.url, viewport={"width": 1280, "height": 800})
        problems: list[str] = []
        # script errors and CSP violations; a failed load is named by its response below
        page.on("console", lambda m: problems.append(m.text) if m.type == "error"
                and not m.text.startswith("Failed to load resource") else None)
        page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400
                and not r.url.endswith("/favicon.ico") else None)
        await sign_in(page, site.tokens["smallco"])

        # search by capability: htmx swaps the timeline in place, the URL follows
        await page.get_by_label("Capability").select_option("laser-cutting")
        timeline = page.locator("#timeline")
        await timeline.locator("text=cam-01").wait_for(state="detached")
        assert "capability=laser-cutting" in page.url
        assert await timeline.locator("tbody tr").count() == 2  # laser-01, laser-02

        # tomorrow's first offered time on laser-01 fills the booking form
        row = timeline.locator("tbody tr", has_text="laser-01")
        await row.locator("td").nth(1).locator("a.seg.offered").first.click()
        await page.wait_for_url("**#book")
        assert await page.get_by_label("Machine").input_value() == "laser-01"
        start = await page.get_by_label("Start (Europe/Paris)").input_value()
        assert start == f"{tomorrow.isoformat()}T00:00"
        await page.get_by_label("Purpose").fill("smallco-prototype")

        # hold, then confirm
        await page.get_by_role("button", name="Hold this slot").click()
        await page.get_by_role("heading", name="Confirm your hold").wait_for()
        await page.get_by_role("button", name="Confirm booking").click()
        await page.get_by_text("Booked: the slot is yours.").wait_for()

        # on the timeline as its own, confirmed; in the list with its status
        mine = page.locator("#timeline tbody tr", has_text="laser-01").locator(
            "a.seg.mine.confirmed")
        assert await mine.count() == 1
        label = await mine.get_attribute("title")
        assert label is not None
        assert "your booking (confirmed)" in label
        assert "00:00 to 01:00" in label
        booked = page.locator("#mine tbody tr", has_text="laser-01")
        assert "confirmed" in await booked.inner_text()
        rid = (await booked.get_attribute("id") or "")[len("r-"):]
        assert rid.startswith("r_")
        # the other tenant's booking: busy time, with nothing of its own
        busy = page.locator("#timeline tbody tr", has_text="laser-01").locator(
            "td").nth(1).locator(".seg.busy")
        assert "busy" in (await busy.first.get_attribute("title") or "")
        html = await page.content()
        for leak in (their_id, "bigco", "bigco-secret-run"):
            assert leak not in html

        # the calendar link, shown once, serves the booking
        await page.get_by_role("button", name="Get my calendar link").click()
        url = await page.get_by_label("Calendar feed URL").input_value()
        assert url.startswith(f"{site.url}/ical/")
        await page.get_by_role("button", name="Copy").click()
        await page.get_by_text("Copied.").or_(page.get_by_text("Select the link")).wait_for()
        async with httpx.AsyncClient() as client:
            feed = await client.get(url)
        assert feed.status_code == 200
        assert f"UID:{rid}@pilotline" in feed.text
        assert their_id not in feed.text

        await page.goto("/board/tenant?capability=laser-cutting")
        SCREENSHOT.parent.mkdir(exist_ok=True)
        await page.screenshot(path=str(SCREENSHOT))
        assert problems == []

        # a tablet: the page fits its width, the timeline scrolls inside its own box
        await page.set_viewport_size({"width": 768, "height": 1024})
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0
        assert await page.get_by_role("button", name="Hold this slot").is_visible()

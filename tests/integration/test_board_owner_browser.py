"""The owner view in a real browser (issue 16): Debian's Chromium through Playwright against a
real gateway (real Mosquitto, simulated machines: tests/board_site.py). A tenant requests a
booking through the API on a machine whose owner approves bookings; the owner signs in, sees
the request with the tenant named, approves it, and the booking shows confirmed. The
screenshot of the view for the README: docs/board-owner.png."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.board_site import board_site, sign_in

from pilotline.demo.broker import MosquittoBroker

pytestmark = pytest.mark.integration

DOCS = Path(__file__).parents[2] / "docs"
HOUR = 3_600_000
QUARTER = HOUR // 4


async def test_an_owner_approves_a_tenants_request_in_the_browser(
    tmp_path: Path, broker: MosquittoBroker, browser: Any
) -> None:
    owners = {"acme": {"show_to_tenants": True, "booking": {"approval": True}}, "lumen": {}}
    async with board_site(tmp_path, broker, owners=owners,
                          states={"laser-01": "running", "laser-02": "idle",
                                  "cam-01": "idle", "coater-01": "idle"}) as site:
        start = (int(time.time() * 1000) // QUARTER + 8) * QUARTER  # two hours ahead
        auth = {"Authorization": f"Bearer {site.tokens['smallco']}"}
        async with httpx.AsyncClient(base_url=site.url, headers=auth) as api:
            held = await api.post("/api/reservations", json={
                "machine": "laser-01", "start": start, "end": start + 3 * HOUR,
                "purpose": "prototype brackets"})
            assert held.status_code == 201, held.text
            rid = held.json()["id"]
            asked = await api.post(f"/api/reservations/{rid}/confirm")
            assert asked.json()["status"] == "requested"

        page = await browser.new_page(base_url=site.url, viewport={"width": 1280, "height": 800})
        await sign_in(page, site.tokens["acme"])
        assert page.url.endswith("/board/owner")
        request = page.locator(f"#request-{rid}")
        await request.wait_for()
        assert "smallco" in await request.inner_text()
        assert "prototype brackets" in await request.inner_text()
        # lumen's machines are not on acme's page at all
        assert "cam-01" not in await page.content()
        assert "coater-01" not in await page.content()
        DOCS.mkdir(exist_ok=True)
        await page.screenshot(path=str(DOCS / "board-owner.png"))

        await request.get_by_label("Note to smallco (optional)").fill("bring your own nozzle")
        async with page.expect_navigation():
            await request.get_by_role("button", name="Approve").click()

        notice = page.locator("#notice")
        assert f"Request {rid} approved" in await notice.inner_text()
        assert await page.locator(f"#request-{rid}").count() == 0
        assert await page.locator(f"#booking-{rid} .status").inner_text() == "confirmed"
        stored = site.gateway.store.reservations().get(rid)
        assert stored is not None
        assert stored.status.value == "confirmed"


async def test_the_owner_view_fits_a_tablet(
    tmp_path: Path, broker: MosquittoBroker, browser: Any
) -> None:
    async with board_site(tmp_path, broker) as site:
        page = await browser.new_page(base_url=site.url, viewport={"width": 768, "height": 1024})
        await sign_in(page, site.tokens["acme"])
        await page.locator("#utilization").wait_for()
        # the page itself never scrolls sideways (wide tables scroll inside their box)
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0
        # every control reachable by keyboard has a name
        unnamed = await page.evaluate("""() => [...document.querySelectorAll(
            'main input:not([type=hidden]), main button')].filter(
            e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                 && !e.textContent.trim()).length""")
        assert unnamed == 0

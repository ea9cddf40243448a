"""The board's operator view in a real browser (issue 16): Debian's Chromium through
Playwright against a real gateway (real Mosquitto, simulated machines: tests/board_site.py).
The plant changes colour by itself when a machine goes down, without a reload; a forged form
post from the page's own context is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.board_site import board_site, sign_in

from pilotline.demo.broker import MosquittoBroker

pytestmark = pytest.mark.integration

DOCS = Path(__file__).parents[2] / "docs"
ALERTS = {"rules": [{"name": "machine-down", "severity": "critical", "state": "down",
                     "message": "{machine} is {state}"}]}


async def test_the_operator_sees_a_machine_go_down_without_a_reload(
    tmp_path: Path, broker: MosquittoBroker, browser: Any
) -> None:
    async with board_site(tmp_path, broker, states={
        "laser-01": "idle", "laser-02": "running", "cam-01": "maintenance", "coater-01": "idle",
    }, alerts=ALERTS) as site:
        page = await browser.new_page(base_url=site.url, viewport={"width": 1280, "height": 800})
        await sign_in(page, site.tokens["operator"])
        assert page.url.endswith("/board/operator")
        laser = page.locator('#plant tr[data-machine="laser-01"]')
        await laser.locator(".state.idle").wait_for()
        assert await laser.locator(".state").inner_text() == "idle"  # written, not colour alone
        # a mark that a reload or a navigation would wipe
        await page.evaluate("window.notReloaded = 'still here'")

        site.plant.set("laser-01", "down")
        await laser.locator(".state.down").wait_for(timeout=8_000)

        assert await laser.get_attribute("class") == "op-machine down"
        assert await laser.locator(".state").inner_text() == "down"
        assert await page.evaluate("window.notReloaded") == "still here"
        assert "laser-01 idle → down" in await page.locator("#op-news").inner_text()
        await page.locator("#op-live", has_text="Live: checked at").wait_for()
        alert = page.locator("#plant tr.op-alert.firing", has_text="machine-down")
        await alert.wait_for(timeout=8_000)
        assert "laser-01" in await alert.inner_text()
        await page.screenshot(path=str(DOCS / "board-operator.png"))

        # a form post without the session's CSRF token, from the page itself, does nothing
        status = await page.evaluate(
            "fetch('/board/sign-out', {method: 'POST', "
            "body: new URLSearchParams({csrf: 'forged'})}).then(r => r.status)"
        )
        assert status == 403
        answer = await page.request.get("/board/operator/plant", max_redirects=0)
        assert answer.status == 200  # still signed in
        await page.close()


async def test_the_operator_view_reads_on_a_tablet(
    tmp_path: Path, broker: MosquittoBroker, browser: Any
) -> None:
    async with board_site(tmp_path, broker) as site:
        page = await browser.new_page(base_url=site.url, viewport={"width": 768, "height": 1024})
        await sign_in(page, site.tokens["operator"])
        for machine in ("laser-01", "laser-02", "cam-01", "coater-01"):
            await page.locator(f'#plant tr[data-machine="{machine}"]').wait_for()
        # nothing wider than the screen but the tables' own scrolling boxes
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 768
        # keyboard: the first stop is a control of the page, the sign-out reachable
        await page.keyboard.press("Tab")
        focused = await page.evaluate("document.activeElement.textContent.trim()")
        assert focused == "pilotline"
        await page.close()

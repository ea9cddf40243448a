"""The capacity board in a real browser (issue 16): Debian's Chromium through Playwright
against a real gateway (real Mosquitto, simulated machines: tests/board_site.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.board_site import board_site, sign_in

from pilotline.demo.broker import MosquittoBroker

pytestmark = pytest.mark.integration


async def test_a_tenant_signs_in_and_out(
    tmp_path: Path, broker: MosquittoBroker, browser: Any
) -> None:
    async with board_site(tmp_path, broker) as site:
        page = await browser.new_page(base_url=site.url)
        await sign_in(page, site.tokens["smallco"])
        assert page.url.endswith("/board/tenant")
        assert "smallco" in await page.inner_text("header")
        await page.get_by_role("button", name="Sign out").click()
        await page.wait_for_url("**/board/sign-in")
        await page.goto("/board/tenant")
        assert page.url.endswith("/board/sign-in")

"""The board's operator view (issue 16): the live plant from the API's answers as the
operator, every machine with its state written and coloured, capacity by zone, alerts, health
and the bookings holding a machine now; the fragment the page polls is the operator's alone
and answers 204 while nothing changed. In a real browser:
tests/integration/test_board_operator_browser.py."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.fakes import T0, Clock
from tests.sites import UNIT_DEFAULTS, machine_config, site_yaml

from pilotline.collectors.mqtt.collector import AckToken
from pilotline.gateway.api.app import create_app
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway
from pilotline.gateway.store.tokens import Role
from pilotline.rules import Sample

BASE = "http://127.0.0.1:8080"
MACHINES = {"laser-01": ("photonics", "acme"), "cam-02": ("photonics", "lumen"),
            "mill-03": ("machining", "acme")}

ALERTS = {"rules": [{"name": "machine-down", "severity": "critical", "state": "down",
                     "message": "{machine} is {state}"}]}


@dataclass
class Site:
    gateway: Gateway
    clock: Clock
    client: httpx.AsyncClient
    delivered: int = 0

    def token(self, role: Role, subject: str | None = None) -> str:
        return self.gateway.store.tokens().create(
            f"{role.value}-{subject or 'x'}", role, subject, now_ms=T0
        )

    async def sign_in(self, role: Role, subject: str | None = None) -> None:
        page = await self.client.get("/board/sign-in")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        answer = await self.client.post(
            "/board/sign-in", data={"token": self.token(role, subject), "csrf": csrf.group(1)},
            headers={"Origin": BASE},
        )
        assert answer.status_code == 303

    def report(self, states: dict[str, str], after_s: float = 1) -> None:
        """Each machine reports ``states`` (its MQTT words), ``after_s`` from now."""
        self.clock.set(self.clock() + int(after_s * 1000))
        for machine, state in states.items():
            self.delivered += 1
            self.gateway.ingest.sample(Sample(machine, self.clock(), {"state": state}),
                                       AckToken(1, self.delivered, self.delivered))
        self.gateway.tick()


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    zones: dict[str, list[dict[str, object]]] = {}
    for machine, (zone, owner) in MACHINES.items():
        zones.setdefault(zone, []).append(machine_config(machine, owner))
    (tmp_path / "site.yaml").write_text(site_yaml(
        zones, store=tmp_path / "gw.db", alerts=ALERTS,
        defaults={**UNIT_DEFAULTS, "offering": "always", "stale_after_s": 3600,
                  "debounce_s": 0, "min_idle_s": 1},
    ))
    clock = Clock(T0)
    gateway = Gateway(load_config(tmp_path / "site.yaml"), clock_ms=clock,
                      monotonic_ms=clock.monotonic)
    gateway.caught_up = True
    transport = httpx.ASGITransport(app=create_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        site = Site(gateway, clock, client)
        site.report({"laser-01": "NotExecuting", "cam-02": "Executing", "mill-03": "OutOfService"})
        site.report({"laser-01": "NotExecuting"}, after_s=5)  # idle long enough: offered
        yield site
    gateway.store.close()


def rows(html: str) -> dict[str, str]:
    """Machine -> the state its row is drawn in (its class) and says (its badge)."""
    found = re.findall(
        r'<tr class="op-machine (\w+)" data-machine="([\w-]+)" data-state="\w+">\s*'
        r'<th scope="row">[\w-]+</th>\s*<td><span class="state (\w+)">(\w+)</span>', html,
    )
    out = {}
    for row_class, machine, badge_class, written in found:
        assert row_class == badge_class == written, (machine, row_class, badge_class, written)
        out[machine] = written
    return out


async def test_the_operator_sees_every_machine_with_its_state_by_zone(site: Site) -> None:
    await site.sign_in(Role.OPERATOR)
    page = await site.client.get("/board/operator")

    assert page.status_code == 200
    assert rows(page.text) == {"laser-01": "idle", "cam-02": "running", "mill-03": "down"}
    assert page.text.index("<h3 id=\"zone-1\">machining</h3>") < page.text.index("photonics")
    # capacity by zone, bookable counted, and the time zone named on the page
    assert "1 bookable" in page.text
    assert "times in UTC" in page.text or f"times in {site.gateway.config.tz.key}" in page.text
    assert 'hx-get="/board/operator/plant?v=' in page.text
    assert 'aria-live="polite"' in page.text


async def test_the_fragment_has_the_plant_and_follows_a_change(site: Site) -> None:
    await site.sign_in(Role.OPERATOR)
    first = await site.client.get("/board/operator/plant")
    assert first.status_code == 200
    assert first.text.lstrip().startswith("<div id=\"plant\"")  # the fragment, not a page
    assert "<html" not in first.text
    assert rows(first.text)["laser-01"] == "idle"

    site.report({"laser-01": "OutOfService"})
    changed = await site.client.get("/board/operator/plant")
    assert rows(changed.text)["laser-01"] == "down"


async def test_an_unchanged_plant_answers_204_so_nothing_is_swapped(site: Site) -> None:
    await site.sign_in(Role.OPERATOR)
    first = await site.client.get("/board/operator/plant")
    digest = re.search(r'plant\?v=(\w+)"', first.text)
    assert digest is not None
    same = await site.client.get("/board/operator/plant", params={"v": digest.group(1)})
    assert same.status_code == 204
    site.report({"cam-02": "NotExecuting"})
    moved = await site.client.get("/board/operator/plant", params={"v": digest.group(1)})
    assert moved.status_code == 200
    assert rows(moved.text)["cam-02"] == "idle"


@pytest.mark.parametrize(("role", "subject"), [(Role.OWNER, "acme"), (Role.TENANT, "smallco")])
async def test_the_fragment_is_the_operators_alone(
    site: Site, role: Role, subject: str
) -> None:
    await site.sign_in(role, subject)
    answer = await site.client.get("/board/operator/plant")
    assert answer.status_code == 403
    assert "laser-01" not in answer.text


async def test_without_a_session_the_fragment_sends_to_sign_in(site: Site) -> None:
    plain = await site.client.get("/board/operator/plant")
    assert (plain.status_code, plain.headers["location"]) == (303, "/board/sign-in")
    # htmx would follow a redirect and swap the sign-in page into the table: it is told to
    # load the sign-in page instead
    polled = await site.client.get("/board/operator/plant", headers={"HX-Request": "true"})
    assert polled.status_code == 204
    assert polled.headers["hx-redirect"] == "/board/sign-in"


async def test_alerts_health_and_bookings_now_are_shown(site: Site) -> None:
    tenant = site.token(Role.TENANT, "smallco")
    start = (site.clock() // 900_000 + 1) * 900_000  # bookings are on a 15 min grid
    made = await site.client.post(
        "/api/reservations",
        json={"machine": "laser-01", "start": start, "end": start + 3_600_000,
              "purpose": "trial"},
        headers={"Authorization": f"Bearer {tenant}", "Idempotency-Key": "op-1"},
    )
    assert made.status_code == 201, made.text
    confirmed = await site.client.post(f"/api/reservations/{made.json()['id']}/confirm",
                                       headers={"Authorization": f"Bearer {tenant}"})
    assert confirmed.status_code == 200, confirmed.text
    site.report({"laser-01": "NotExecuting"}, after_s=(start - site.clock()) / 1000 + 60)
    await site.sign_in(Role.OPERATOR)
    page = (await site.client.get("/board/operator")).text

    assert re.search(r"<td>laser-01</td><td>smallco</td><td>confirmed</td>", page), page
    assert re.search(r'<span class="op-cap reserved">reserved</span>\s*'
                     r'<span class="muted">smallco \(confirmed\) until', page)
    assert re.search(r'<span class="op-status firing">firing</span>.*?<td>critical</td>'
                     r"<td>mill-03</td><td>machine-down</td>", page, re.S), page
    assert re.search(r'<span class="op-status problem">unhealthy</span>\s*'
                     r"<strong>mqtt</strong>", page)  # no broker in a unit test

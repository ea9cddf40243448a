"""The capacity board's shell (issue 16): sign-in with a token, the session cookie, CSRF on
every form, sign-out, a revoked token ending its session, each role sent to its own view, the
in-process API asked as the signed-in principal, and the vendored script as recorded. The
pages in a real browser: tests/integration/test_board_browser.py."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.fakes import T0, Clock
from tests.sites import UNIT_DEFAULTS, machine_config, site_yaml

from pilotline.gateway.api.app import create_app
from pilotline.gateway.board.sessions import COOKIE, Sessions
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway
from pilotline.gateway.store.tokens import Role

BOARD = Path(__file__).parents[2] / "gateway" / "pilotline" / "gateway" / "board"
BASE = "http://127.0.0.1:8080"


@dataclass
class Site:
    gateway: Gateway
    client: httpx.AsyncClient

    def token(self, role: Role, subject: str | None = None, name: str | None = None) -> str:
        name = name or f"{role.value}-{subject or 'x'}"
        return self.gateway.store.tokens().create(name, role, subject, now_ms=T0)

    async def sign_in(self, token: str) -> httpx.Response:
        page = await self.client.get("/board/sign-in")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        return await self.client.post(
            "/board/sign-in", data={"token": token, "csrf": csrf.group(1)},
            headers={"Origin": BASE},
        )

    async def csrf(self, path: str) -> str:
        page = await self.client.get(path)
        found = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert found is not None, page.text
        return found.group(1)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    (tmp_path / "site.yaml").write_text(site_yaml(
        {"photonics": [machine_config("laser-01", "acme"), machine_config("cam-02", "lumen")]},
        store=tmp_path / "gw.db",
        defaults={**UNIT_DEFAULTS, "offering": "always"},
    ))
    clock = Clock(T0)
    gateway = Gateway(load_config(tmp_path / "site.yaml"), clock_ms=clock,
                      monotonic_ms=clock.monotonic)
    transport = httpx.ASGITransport(app=create_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield Site(gateway, client)
    gateway.store.close()


async def test_a_tenant_signs_in_and_lands_on_its_view_with_a_strict_cookie(site: Site) -> None:
    answer = await site.sign_in(site.token(Role.TENANT, "smallco"))

    assert answer.status_code == 303
    assert answer.headers["location"] == "/board/tenant"
    cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith(COOKIE))
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/board" in cookie
    page = await site.client.get("/board/tenant")
    assert page.status_code == 200
    assert "smallco" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(("role", "subject", "view"), [
    (Role.OPERATOR, None, "operator"), (Role.OWNER, "acme", "owner"),
    (Role.TENANT, "smallco", "tenant"),
])
async def test_each_role_sees_its_view_and_no_other(
    site: Site, role: Role, subject: str | None, view: str
) -> None:
    await site.sign_in(site.token(role, subject))
    assert (await site.client.get("/board")).headers["location"] == f"/board/{view}"
    for other in {"operator", "owner", "tenant"} - {view}:
        assert (await site.client.get(f"/board/{other}")).status_code == 403


async def test_without_a_session_every_page_sends_to_sign_in(site: Site) -> None:
    for path in ("/board", "/board/tenant", "/board/owner", "/board/operator"):
        answer = await site.client.get(path)
        assert (answer.status_code, answer.headers["location"]) == (303, "/board/sign-in")


async def test_a_wrong_token_or_a_scraper_is_refused_in_words(site: Site) -> None:
    wrong = await site.sign_in("plt_00000000_" + "x" * 43)
    assert wrong.status_code == 401
    assert "not valid here" in wrong.text
    scraper = await site.sign_in(site.token(Role.SCRAPER))
    assert scraper.status_code == 401
    assert COOKIE not in site.client.cookies


async def test_a_sign_in_without_its_form_token_is_refused(site: Site) -> None:
    token = site.token(Role.TENANT, "smallco")
    answer = await site.client.post("/board/sign-in", data={"token": token, "csrf": "forged"})
    assert answer.status_code == 403
    await site.client.get("/board/sign-in")  # with its cookie, a token that is not ASCII
    odd = await site.client.post("/board/sign-in", data={"token": token, "csrf": "jéton"})
    assert odd.status_code == 403
    assert COOKIE not in site.client.cookies


async def test_a_form_without_the_sessions_csrf_token_does_nothing(site: Site) -> None:
    await site.sign_in(site.token(Role.TENANT, "smallco"))
    forged = await site.client.post("/board/sign-out", data={"csrf": "forged"})
    assert forged.status_code == 403
    odd = await site.client.post("/board/sign-out", data={"csrf": "jéton"})
    assert odd.status_code == 403
    cross_site = await site.client.post(
        "/board/sign-out", data={"csrf": await site.csrf("/board/tenant")},
        headers={"Origin": "https://evil.example"},
    )
    assert cross_site.status_code == 403
    assert (await site.client.get("/board/tenant")).status_code == 200  # still signed in


async def test_signing_out_ends_the_session_on_the_server(site: Site) -> None:
    await site.sign_in(site.token(Role.TENANT, "smallco"))
    sid = site.client.cookies[COOKIE]
    out = await site.client.post(
        "/board/sign-out", data={"csrf": await site.csrf("/board/tenant")},
        headers={"Origin": BASE},
    )
    assert (out.status_code, out.headers["location"]) == (303, "/board/sign-in")
    # even a copy of the old cookie opens nothing now
    site.client.cookies.set(COOKIE, sid, path="/board")
    assert (await site.client.get("/board/tenant")).status_code == 303


async def test_revoking_the_token_ends_its_sessions(site: Site) -> None:
    token = site.token(Role.OWNER, "acme", name="acme-board")
    await site.sign_in(token)
    assert (await site.client.get("/board/owner")).status_code == 200
    site.gateway.store.tokens().revoke("acme-board", now_ms=T0)
    assert (await site.client.get("/board/owner")).status_code == 303


def test_a_session_expires_when_idle_and_at_its_maximum_age() -> None:
    now = [0.0]
    sessions = Sessions(ttl_s=10, max_age_s=30, clock=lambda: now[0])
    from pilotline.gateway.store.tokens import Principal

    who = Principal("t", Role.TENANT, "c")
    idle = sessions.open(who)
    now[0] = 11
    assert sessions.get(idle.id) is None
    busy = sessions.open(who)
    for t in range(12, 41, 5):
        now[0] = t
        alive = sessions.get(busy.id) is not None
        assert alive == (t - 11 <= 30)


async def test_the_board_asks_the_api_as_the_signed_in_principal(site: Site) -> None:
    """In process, with no bearer token: the API's own filters apply (an owner gets only its
    machines), and the scope key cannot be set from outside."""
    board = site.client._transport.app.state.board  # type: ignore[attr-defined]
    owner = site.gateway.store.tokens().authenticate(site.token(Role.OWNER, "acme"))[0]
    assert owner is not None
    session = board.sessions.open(owner)
    answer = await board.ask(session, "GET", "/api/machines")
    assert answer.status == 200
    assert {m["id"] for m in answer.json()} == {"laser-01"}
    # an outside request naming the key as a header is just unauthenticated
    outside = await site.client.get(
        "/api/machines", headers={"pilotline.in_process_principal": "operator"}
    )
    assert outside.status_code == 401


def test_the_vendored_script_is_the_one_recorded() -> None:
    record = (BOARD / "static" / "VENDORED.md").read_text()
    script = BOARD / "static" / "htmx-2.0.11.min.js"
    assert hashlib.sha256(script.read_bytes()).hexdigest() in record


async def test_static_files_are_a_fixed_list(site: Site) -> None:
    assert (await site.client.get("/board/static/htmx.min.js")).status_code == 200
    assert (await site.client.get("/board/static/..%2Fapp.py")).status_code == 404
    assert (await site.client.get("/board/static/app.py")).status_code == 404

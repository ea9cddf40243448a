"""Calendar feeds (api/feeds.py, api/ical.py, store/feed_tokens.py) over the app in-process:
each principal's feed parsed with ``icalendar``; what a tenant, an owner and an operator
see; SEQUENCE, STATUS and RELATED-TO as bookings move; rotation and revocation; a wrong
token is a 404; the feed token reaches no log line."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from icalendar import Calendar
from structlog.testing import capture_logs
from tests.auth import bearer
from tests.fakes import T0, Clock
from tests.sites import UNIT_DEFAULTS, machine_config, site_yaml

from pilotline.gateway.api.app import create_app
from pilotline.gateway.cli import main
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway
from pilotline.gateway.store.tokens import Role
from pilotline.rules.booking import Request

HOUR = 3_600_000
START = T0 + 2 * HOUR  # the clock stands at T0


class Site:
    def __init__(self, gateway: Gateway, client: httpx.AsyncClient, clock: Clock) -> None:
        self.gateway = gateway
        self.client = client
        self.clock = clock
        store = gateway.store
        self.smallco = bearer(store, Role.TENANT, "smallco")
        self.bigco = bearer(store, Role.TENANT, "bigco")
        self.acme = bearer(store, Role.OWNER, "acme")
        self.umbra = bearer(store, Role.OWNER, "umbra")
        self.operator = bearer(store, Role.OPERATOR)
        self.scraper = bearer(store, Role.SCRAPER)

    async def booked(self, who: dict[str, str], machine: str, start: int) -> str:
        """A reservation of ``who`` confirmed (or requested where the owner approves)."""
        answer = await self.client.post(
            "/api/reservations", headers=who,
            json={"machine": machine, "start": start, "end": start + HOUR, "purpose": "trial"},
        )
        assert answer.status_code == 201, answer.text
        rid: str = answer.json()["id"]
        await self.step(who, rid, "confirm")
        return rid

    async def step(self, who: dict[str, str], rid: str, action: str) -> None:
        self.clock.ms += 60_000  # each move a minute later: LAST-MODIFIED moves with it
        answer = await self.client.post(f"/api/reservations/{rid}/{action}", headers=who)
        assert answer.status_code == 200, answer.text

    async def feed_url(self, who: dict[str, str]) -> str:
        answer = await self.client.post("/api/feeds", headers=who)
        assert answer.status_code == 201, answer.text
        assert answer.headers["cache-control"] == "no-store"
        body = answer.json()
        assert body["url"] == "http://api" + body["path"]
        path: str = body["path"]
        return path

    async def feed(self, path: str) -> Calendar:
        answer = await self.client.get(path)  # no Authorization header: the path is enough
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "text/calendar; charset=utf-8"
        return Calendar.from_ical(answer.content)


def events(cal: Calendar) -> dict[str, Any]:
    """VEVENTs of bookings by reservation id (offered time aside: ``offered``)."""
    return {str(e["UID"]).removesuffix("@pilotline"): e for e in cal.walk("VEVENT")
            if not str(e["UID"]).startswith("offered-")}


def offered(cal: Calendar) -> list[tuple[str, int, int]]:
    """(summary, start ms, end ms) of the offered-time VEVENTs, each TRANSPARENT."""
    out = []
    for e in cal.walk("VEVENT"):
        if str(e["UID"]).startswith("offered-"):
            assert str(e["TRANSP"]) == "TRANSPARENT"
            start, end = (round(e[k].dt.timestamp() * 1000) for k in ("DTSTART", "DTEND"))
            assert str(e["UID"]) == f"offered-{str(e['SUMMARY']).split(':')[0]}-{start}@pilotline"
            out.append((str(e["SUMMARY"]), start, end))
    return out


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    path = tmp_path / "site.yaml"
    path.write_text(
        site_yaml(
            {"z": [
                machine_config("laser-01", "acme", capabilities=["laser-cutting"]),
                machine_config("press-01", "umbra", capabilities=["pressing"],
                               booking={"approval": True}),
            ]},
            influx=None,
            store=tmp_path / "gw.db",
            defaults={**UNIT_DEFAULTS, "offering": "always"},
            owners={"acme": {"show_to_tenants": True}, "umbra": {"show_to_tenants": False}},
        )
    )
    clock = Clock(T0)
    gateway = Gateway(load_config(path), clock_ms=clock)
    transport = httpx.ASGITransport(app=create_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield Site(gateway, client, clock)
    gateway.store.close()


async def test_each_principal_sees_in_its_feed_what_it_may_see(site: Site) -> None:
    mine = await site.booked(site.smallco, "laser-01", START)
    theirs = await site.booked(site.bigco, "press-01", START)  # requested: umbra approves

    cal = await site.feed(await site.feed_url(site.smallco))
    assert str(cal["VERSION"]) == "2.0"
    assert cal["REFRESH-INTERVAL"].dt.total_seconds() == 3600
    assert str(cal["X-PUBLISHED-TTL"]) == "PT1H"
    found = events(cal)
    assert list(found) == [mine]  # nothing of bigco's
    event = found[mine]
    assert str(event["SUMMARY"]) == "laser-01: confirmed"  # its own: no tenant named
    assert str(event["STATUS"]) == "CONFIRMED"
    assert event["DTSTART"].dt.timestamp() * 1000 == START
    assert event["DTEND"].dt.timestamp() * 1000 == START + HOUR
    assert event["DTSTART"].dt.utcoffset().total_seconds() == 0  # UTC
    assert event.to_ical().count(b"Z\r\n") >= 4  # DTSTART, DTEND, DTSTAMP, LAST-MODIFIED
    assert b"bigco" not in cal.to_ical()

    umbra = events(await site.feed(await site.feed_url(site.umbra)))
    assert list(umbra) == [theirs]  # the bookings on its machines only, tenants named
    assert str(umbra[theirs]["SUMMARY"]) == "press-01: requested for bigco"
    assert str(umbra[theirs]["STATUS"]) == "TENTATIVE"

    everything = events(await site.feed(await site.feed_url(site.operator)))
    assert set(everything) == {mine, theirs}
    assert str(everything[mine]["SUMMARY"]) == "laser-01: confirmed for smallco"

    # a scraper has no feed
    assert (await site.client.post("/api/feeds", headers=site.scraper)).status_code == 403


async def test_sequence_rises_with_each_move_and_a_cancelled_booking_stays(site: Site) -> None:
    path = await site.feed_url(site.bigco)
    rid = await site.booked(site.bigco, "press-01", START)
    before = events(await site.feed(path))[rid]
    assert int(before["SEQUENCE"]) == 1  # held, then requested
    await site.step(site.umbra, rid, "approve")
    approved = events(await site.feed(path))[rid]
    assert int(approved["SEQUENCE"]) == 2
    assert str(approved["STATUS"]) == "CONFIRMED"
    assert approved["LAST-MODIFIED"].dt > before["LAST-MODIFIED"].dt
    assert approved["DTSTAMP"].dt == approved["LAST-MODIFIED"].dt
    assert str(approved["UID"]) == str(before["UID"])

    await site.step(site.bigco, rid, "cancel")
    cancelled = events(await site.feed(path))[rid]
    assert int(cancelled["SEQUENCE"]) == 3
    assert str(cancelled["STATUS"]) == "CANCELLED"
    assert str(cancelled["SUMMARY"]) == "press-01: cancelled"

    # an unchanged booking is the same text at every poll (clients and caches can compare)
    site.clock.ms += HOUR
    assert (await site.client.get(path)).content == (await site.client.get(path)).content


async def test_a_successor_is_related_to_its_predecessor(site: Site) -> None:
    first = await site.booked(site.smallco, "laser-01", START)
    config, book = site.gateway.config, site.gateway.store.reservations()
    moved = book.request(
        Request("laser-01", "smallco", START + HOUR, START + 2 * HOUR, replaces=first),
        config.booking_rules("laser-01"), [(T0, T0 + 100 * HOUR)], site.clock.ms,
    )
    assert moved.reservation is not None
    book.confirm(moved.reservation.id, site.clock.ms, approval=False, by="test")
    found = events(await site.feed(await site.feed_url(site.smallco)))
    related = found[moved.reservation.id]["RELATED-TO"]
    assert str(related) == f"{first}@pilotline"
    assert related.params["RELTYPE"] == "SIBLING"
    assert "RELATED-TO" not in found[first]


async def test_a_feed_is_rotated_revoked_and_dies_with_its_api_token(site: Site) -> None:
    await site.booked(site.smallco, "laser-01", START)
    old = await site.feed_url(site.smallco)
    new = await site.feed_url(site.smallco)  # rotation: the old URL stops working
    assert old != new
    assert (await site.client.get(old)).status_code == 404
    assert (await site.client.get(new)).status_code == 200

    assert (await site.client.delete("/api/feeds", headers=site.smallco)).status_code == 204
    assert (await site.client.get(new)).status_code == 404
    assert (await site.client.delete("/api/feeds", headers=site.smallco)).status_code == 404

    # revoking the API token takes its feed with it
    again = await site.feed_url(site.smallco)
    tokens = site.gateway.store.tokens()
    name = next(t.name for t in tokens.list() if t.subject == "smallco")
    tokens.revoke(name, now_ms=T0)
    assert (await site.client.get(again)).status_code == 404


async def test_a_wrong_feed_token_is_a_404_like_any_unknown_one(site: Site) -> None:
    path = await site.feed_url(site.smallco)
    token = path.removeprefix("/ical/").removesuffix(".ics")
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")  # right id, wrong secret
    unknown = "plf_0badc0de_" + "A" * 43
    answers = [
        await site.client.get(f"/ical/{t}.ics")
        for t in (flipped, unknown, "garbage", "plt_0badc0de_" + "A" * 43, "x" * 500)
    ]
    assert [a.status_code for a in answers] == [404] * 5
    assert {a.json()["detail"] for a in answers} == {"no such calendar feed"}
    # an API bearer token opens no feed, nor does a valid feed token with a header
    assert (await site.client.get(f"/ical/{unknown}.ics", headers=site.operator)).status_code \
        == 404
    assert site.gateway.metrics.auth_failures["feed"] == 6


async def test_the_feed_token_reaches_no_log_line(site: Site) -> None:
    await site.booked(site.smallco, "laser-01", START)
    with capture_logs() as logs:
        path = await site.feed_url(site.smallco)
        token = path.removeprefix("/ical/").removesuffix(".ics")
        await site.feed(path)
        await site.client.get(f"/ical/{token[:-1]}Z.ics")
        await site.client.post("/api/feeds", headers=site.smallco)
        await site.client.get(path)  # rotated away
    assert token not in repr(logs)
    assert token[:12] not in repr(logs)  # not even its id
    audited = [e for e in logs if e["event"] == "api.access" and e["route"].startswith("/ical")]
    assert [(e["route"], e["subject"], e["status"]) for e in audited] == [
        ("/ical/{feed}.ics", "smallco", 200)
    ]
    refused = [e for e in logs if e["event"] == "api.auth_failed"]
    assert [(e["route"], e["reason"]) for e in refused] == [("/ical/{feed}.ics", "feed")] * 2


def test_pilotline_feed_issues_lists_and_revokes(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "site.yaml"
    tokens = site.gateway.store.tokens()
    owner = next(t.name for t in tokens.list() if t.subject == "acme")
    scraper = next(t.name for t in tokens.list() if t.role is Role.SCRAPER)

    def feed(*args: str) -> tuple[int, str]:
        code = main(["feed", *args, "-c", str(config)])
        return code, capsys.readouterr().out

    code, out = feed("create", "--token", owner)
    assert code == 0
    path = out.strip()
    assert path.startswith("/ical/plf_")
    assert path.endswith(".ics")
    assert site.gateway.store.feeds.authenticate(path[6:-4]) is not None
    code, listed = feed("list")
    assert f"{owner}\t" in listed
    assert "active" in listed
    assert path[6:-4] not in listed  # never the token
    assert feed("create", "--token", scraper)[0] == 1
    assert feed("create", "--token", "nobody")[0] == 1
    assert feed("revoke", "--token", owner)[0] == 0
    assert site.gateway.store.feeds.authenticate(path[6:-4]) is None


DAY = 24 * HOUR


async def test_an_owners_feed_shows_its_machines_offered_time(site: Site) -> None:
    theirs = await site.booked(site.bigco, "press-01", START)  # requested: holds the time
    await site.booked(site.smallco, "laser-01", START)  # acme's: not in umbra's feed
    path = await site.feed_url(site.umbra)
    cal = await site.feed(path)
    assert list(events(cal)) == [theirs]
    # four weeks ahead from the hour, around the booking, contiguous slots merged
    assert offered(cal) == [
        ("press-01: offered", T0, START), ("press-01: offered", START + HOUR, T0 + 28 * DAY),
    ]
    # the same time GET /api/offers gives, slot for slot (merged) over its week
    answer = await site.client.get("/api/offers", headers=site.umbra,
                                   params={"from": T0, "to": T0 + 7 * DAY})
    [offer] = answer.json()
    slots = [(s["start_ms"], s["end_ms"]) for s in offer["slots"]]
    assert slots == [(T0, START), (START + HOUR, T0 + 7 * DAY)]
    # tenants' and operators' general feeds show no offered time
    assert offered(await site.feed(await site.feed_url(site.smallco))) == []
    assert offered(await site.feed(await site.feed_url(site.operator))) == []


async def test_a_machine_feed_names_tenants_to_its_owner_only(site: Site) -> None:
    mine = await site.booked(site.smallco, "laser-01", START)
    other = await site.booked(site.bigco, "laser-01", START + 2 * HOUR)
    elsewhere = await site.booked(site.smallco, "press-01", START)

    async def machine_feed(who: dict[str, str], machine: str) -> httpx.Response:
        return await site.client.post("/api/feeds", headers=who, params={"machine": machine})

    answer = await machine_feed(site.acme, "laser-01")
    assert answer.status_code == 201
    cal = await site.feed(answer.json()["path"])
    assert str(cal["X-WR-CALNAME"]) == "pilotline bookings: laser-01"
    found = events(cal)
    assert list(found) == [mine, other]  # laser-01's only
    assert str(found[other]["SUMMARY"]) == "laser-01: confirmed for bigco"
    assert [s for s, _, _ in offered(cal)] == ["laser-01: offered"] * 3

    # a tenant: its own booking, the others' as anonymous busy time, no offered time
    answer = await machine_feed(site.smallco, "laser-01")
    assert answer.status_code == 201
    machine_path = answer.json()["path"]
    cal = await site.feed(machine_path)
    found = events(cal)
    assert list(found) == [mine, other]
    assert str(found[mine]["SUMMARY"]) == "laser-01: confirmed"
    assert str(found[other]["SUMMARY"]) == "laser-01: busy"
    assert "DESCRIPTION" not in found[other]
    assert b"bigco" not in cal.to_ical()
    assert offered(cal) == []
    # someone else's cancelled booking no longer holds the time: gone from the tenant's feed
    await site.step(site.bigco, other, "cancel")
    assert list(events(await site.feed(machine_path))) == [mine]
    assert elsewhere not in events(await site.feed(machine_path))

    # another owner's machine, an unknown one, a scraper: no feed
    assert (await machine_feed(site.umbra, "laser-01")).status_code == 404
    assert (await machine_feed(site.smallco, "nope")).status_code == 404
    assert (await machine_feed(site.scraper, "laser-01")).status_code == 403

    # revocable one by one: the general feed and the machine feed live apart
    general = await site.feed_url(site.smallco)
    assert (await site.client.get(machine_path)).status_code == 200  # not rotated by it
    gone = await site.client.delete("/api/feeds", headers=site.smallco,
                                    params={"machine": "laser-01"})
    assert gone.status_code == 204
    assert (await site.client.get(machine_path)).status_code == 404
    assert (await site.client.get(general)).status_code == 200
    again = await site.client.delete("/api/feeds", headers=site.smallco,
                                     params={"machine": "laser-01"})
    assert again.status_code == 404

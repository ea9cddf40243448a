"""The API as a client reads it: its OpenAPI document, its one error shape, pages, ETags and
the tenant's catalog.

Through the real app (``create_app`` over a real gateway and store, httpx's ASGI transport):

- ``/openapi.json`` has ``format: date-time`` on every time it answers, enums for states,
  severities and statuses, readable unique ``operationId``s and tags, and documents its
  401/403/404/409/422 answers as ``application/problem+json``;
- every refusal is ``application/problem+json`` (RFC 9457), a 422 naming its parameter;
- each list that grows, walked page by page through its ``Link`` headers, gives every item
  once, in the order of the unpaged list, even with items added between pages;
- capacity and forecast carry an ``ETag``; ``If-None-Match`` with it is a 304;
- a tenant's catalog: the offered machines, capabilities, zone, policy in plain words, owner
  names only where allowed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.auth import bearer
from tests.fakes import T0, Clock
from tests.sites import UNIT_DEFAULTS, machine_config, site_yaml

from pilotline.collectors.mqtt.collector import AckToken, Quarantined
from pilotline.gateway.api.app import create_app
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway
from pilotline.gateway.store.tokens import Role
from pilotline.rules import Sample

MINUTE = 60_000
MACHINES = [f"m-{i}" for i in range(4)]
RULES = [
    {"name": "idle-now", "severity": "info", "state": "idle", "message": "{machine} idle"},
    {"name": "idle-loud", "severity": "critical", "state": "idle", "message": "{machine} idle"},
]
PROBLEM = "application/problem+json"


class Site:
    """A gateway whose four machines all change state at the same minutes (so windows tie on
    their start), with two alert rules firing on each idle machine."""

    def __init__(self, tmp_path: Path) -> None:
        path = tmp_path / "site.yaml"
        path.write_text(
            site_yaml(
                {"photonics": [machine_config(m, "acme", capabilities=["cutting"])
                               for m in MACHINES]},
                influx=None,
                store=tmp_path / "gw.db",
                defaults={**UNIT_DEFAULTS, "stale_after_s": 3600, "offering": "always"},
                owners={"acme": {}},
                alerts={"rules": RULES},
            )
        )
        self.clock = Clock()
        self.gw = Gateway(load_config(path), clock_ms=self.clock)
        self.seq = 0
        self.minute = 0

    def minutes(self, n: int) -> None:
        """``n`` more minutes, every machine idle on even minutes, running on odd ones."""
        for _ in range(n):
            ts = T0 + self.minute * MINUTE
            self.clock.ms = ts
            state = "NotExecuting" if self.minute % 2 == 0 else "Executing"
            for machine in MACHINES:
                self.seq += 1
                self.gw.ingest.sample(Sample(machine, ts, {"state": state}),
                                      AckToken(1, self.seq, self.seq))
            self.gw.commit()
            self.minute += 1
        self.clock.ms += 1000
        self.gw.ingest.advance(self.clock.ms)
        self.gw.commit()

    def reject(self, n: int) -> None:
        for i in range(n):
            self.seq += 1
            bad = Quarantined(f"t/m-{i % 4}", "bad_ts", b"{}", self.clock.ms, f"m-{i % 4}")
            self.gw.ingest.reject("mqtt", bad, AckToken(1, self.seq, self.seq))
        self.gw.commit()


@pytest.fixture
def site(tmp_path: Path) -> Site:
    site = Site(tmp_path)
    site.minutes(7)  # idle at 0, 2, 4, 6: three closed windows and an open one per machine
    return site


@pytest.fixture
async def client(site: Site) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(site.gw), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
        yield c


# -- the OpenAPI document ---------------------------------------------------------------------

OPERATIONS = {
    ("get", "/health"): "getHealth",
    ("get", "/metrics"): "getMetrics",
    ("get", "/api/machines"): "listMachines",
    ("get", "/api/capacity"): "getCapacity",
    ("get", "/api/forecast"): "getForecast",
    ("get", "/api/catalog"): "getCatalog",
    ("get", "/api/windows"): "listWindows",
    ("get", "/api/utilization"): "getUtilization",
    ("get", "/api/alerts"): "listAlerts",
    ("post", "/api/alerts/ack"): "acknowledgeAlert",
    ("get", "/api/silences"): "listSilences",
    ("post", "/api/silences"): "createSilence",
    ("delete", "/api/silences/{silence_id}"): "endSilence",
    ("get", "/api/quarantine"): "listQuarantine",
    ("get", "/api/offers"): "listOffers",
    ("post", "/api/reservations"): "createReservation",
    ("get", "/api/reservations"): "listReservations",
    ("get", "/api/reservations/{rid}"): "getReservation",
    ("post", "/api/reservations/{rid}/confirm"): "confirmReservation",
    ("post", "/api/reservations/{rid}/approve"): "approveReservation",
    ("post", "/api/reservations/{rid}/reject"): "rejectReservation",
    ("post", "/api/reservations/{rid}/cancel"): "cancelReservation",
    ("get", "/api/usage"): "getUsage",
    ("post", "/api/reservations/{rid}/extend"): "extendReservation",
    ("post", "/api/reservations/{rid}/move"): "moveReservation",
    ("post", "/api/feeds"): "createFeed",
    ("delete", "/api/feeds"): "revokeFeed",
    ("get", "/ical/{feed}.ics"): "getFeed",
}
OPEN = {"/health", "/ical/{feed}.ics"}
"""Routes without a bearer token: no 401/403 (the feed's token is in its path)."""
TIMES = {
    "MachineOut": ["since", "last_seen", "idle_since"],
    "CapacityAnswer": ["at"],
    "CapacityOut": ["idle_since", "available_since", "offered_until"],
    "ForecastHour": ["start"],
    "Slot": ["start", "end"],
    "ReservationOut": ["start", "end", "created", "hold_until"],
    "UsageStatement": ["from", "to", "generated"],
    "UsageLineOut": ["start", "end"],
    "FeedOut": ["created"],
    "WindowOut": ["start", "end"],
    "UtilizationAnswer": ["from", "to", "until"],
    "AlertOut": ["since", "firing_since", "acked_at"],
    "AckOut": ["acked_at"],
    "SilenceOut": ["starts_at", "ends_at", "created_at"],
    "QuarantinedOut": ["arrival"],
}
# Beyond 401 and 403 (every route but /health) and 422 (every route with parameters).
OWN_ERRORS = {
    ("post", "/api/alerts/ack"): {"404"},
    ("post", "/api/silences"): {"409"},
    ("delete", "/api/silences/{silence_id}"): {"404"},
    ("post", "/api/reservations/{rid}/extend"): {"404", "409"},
    ("post", "/api/reservations/{rid}/move"): {"404", "409"},
    ("delete", "/api/feeds"): {"404"},
    ("get", "/ical/{feed}.ics"): {"404"},
}


async def openapi(site: Site, client: httpx.AsyncClient) -> dict[str, Any]:
    answer = await client.get("/openapi.json", headers=bearer(site.gw.store))
    assert answer.status_code == 200, answer.text
    document: dict[str, Any] = answer.json()
    return document


def enum_of(schema: dict[str, Any], schemas: dict[str, Any]) -> list[str] | None:
    for option in schema.get("anyOf", [schema]):
        ref = option.get("$ref")
        target = schemas[ref.rsplit("/", 1)[1]] if ref else option
        if "enum" in target:
            return list(target["enum"])
    return None


async def test_operations_have_readable_ids_and_tags(
    site: Site, client: httpx.AsyncClient
) -> None:
    document = await openapi(site, client)
    found = {(method, path): op["operationId"]
             for path, ops in document["paths"].items() for method, op in ops.items()}
    assert found == OPERATIONS
    declared = {t["name"] for t in document["tags"]}
    for (method, path), _ in OPERATIONS.items():
        tags = document["paths"][path][method]["tags"]
        assert tags, f"{method} {path} has no tag"
        assert set(tags) <= declared, f"{method} {path}: tags {tags}"


async def test_times_are_date_time_and_states_severities_statuses_are_enums(
    site: Site, client: httpx.AsyncClient
) -> None:
    schemas = (await openapi(site, client))["components"]["schemas"]
    for model, fields in TIMES.items():
        for name in fields:
            prop = schemas[model]["properties"][name]
            formats = [o.get("format") for o in prop.get("anyOf", [prop])]
            assert "date-time" in formats, f"{model}.{name}: {prop}"
    states = ["offline", "running", "idle", "down", "maintenance"]
    assert enum_of(schemas["MachineOut"]["properties"]["state"], schemas) == states
    assert enum_of(schemas["MachineOut"]["properties"]["pending"], schemas) == states
    alert = schemas["AlertOut"]["properties"]
    assert enum_of(alert["severity"], schemas) == ["info", "warning", "critical"]
    assert enum_of(alert["status"], schemas) == ["pending", "firing"]


async def test_error_answers_are_documented_as_problem_json(
    site: Site, client: httpx.AsyncClient
) -> None:
    document = await openapi(site, client)
    schemas = document["components"]["schemas"]
    assert {"type", "title", "status", "detail", "instance"} <= set(
        schemas["Problem"]["properties"]
    )
    assert "errors" in schemas["ValidationProblem"]["properties"]
    for (method, path), op_id in OPERATIONS.items():
        op = document["paths"][path][method]
        expected = OWN_ERRORS.get((method, path), set())
        if path not in OPEN:
            expected |= {"401", "403"}
        if op.get("parameters") or op.get("requestBody"):
            expected.add("422")
        missing = expected - set(op["responses"])
        assert not missing, f"{op_id} does not document {sorted(missing)}"
        for code in expected:
            content = op["responses"][code]["content"]
            assert list(content) == [PROBLEM], f"{op_id} {code}: {list(content)}"
            want = "ValidationProblem" if code == "422" else "Problem"
            assert content[PROBLEM]["schema"]["$ref"].endswith(f"/{want}")


# -- one error shape --------------------------------------------------------------------------


def assert_problem(answer: httpx.Response, status: int, path: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM
    body: dict[str, Any] = answer.json()
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    assert body["type"] == "about:blank"
    assert body["instance"] == path
    return body


async def test_refusals_are_problem_json(site: Site, client: httpx.AsyncClient) -> None:
    operator = bearer(site.gw.store)
    tenant = bearer(site.gw.store, Role.TENANT, "smallco")

    missing = await client.get("/api/machines")
    assert_problem(missing, 401, "/api/machines")
    assert missing.headers["www-authenticate"] == "Bearer"
    assert_problem(await client.get("/api/machines", headers=tenant), 403, "/api/machines")
    gone = assert_problem(await client.delete("/api/silences/nope", headers=operator), 404,
                          "/api/silences/nope")
    assert "nope" in gone["detail"]
    assert_problem(await client.get("/api/nothing", headers=operator), 404, "/api/nothing")

    bad = await client.get("/api/windows", params={"since": "yesterday"}, headers=operator)
    body = assert_problem(bad, 422, "/api/windows")
    assert [e["loc"] for e in body["errors"]] == [["query", "since"]]
    assert "since" in body["detail"]
    far = await client.get("/api/windows", params={"since": T0 - 400 * 86_400_000},
                           headers=operator)
    assert [e["loc"] for e in assert_problem(far, 422, "/api/windows")["errors"]] == [
        ["query", "since"]
    ]
    both = await client.post("/api/silences", headers=operator,
                             json={"matchers": {"zone": "photonics"}})
    assert "exactly one of ends_at and duration" in assert_problem(
        both, 422, "/api/silences")["detail"]

    big = await client.post("/api/silences", headers=operator, content=b"x" * 70_000)
    assert_problem(big, 413, "/api/silences")


async def test_docs_and_redoc_say_they_are_not_served(
    site: Site, client: httpx.AsyncClient
) -> None:
    for path in ("/docs", "/redoc"):
        body = assert_problem(await client.get(path), 404, path)
        assert "not served" in body["detail"]
        assert "/openapi.json" in body["detail"]


# -- pages ------------------------------------------------------------------------------------


async def walk(
    client: httpx.AsyncClient, path: str, params: dict[str, Any], headers: dict[str, str]
) -> tuple[list[Any], int]:
    """Every item of a list, following its ``Link: rel="next"``; and the number of pages."""
    items: list[Any] = []
    pages = 0
    url: str | None = path
    query: dict[str, Any] | None = params
    while url is not None:
        answer = await client.get(url, params=query, headers=headers)
        assert answer.status_code == 200, answer.text
        items.extend(answer.json())
        pages += 1
        assert pages < 100, "the walk does not end"
        url = answer.links.get("next", {}).get("url")
        query = None  # the link carries the query
    return items, pages


def window_key(w: dict[str, Any]) -> tuple[str, int]:
    return (w["machine"], w["start_ms"])


async def test_windows_walked_by_page_are_each_seen_once(
    site: Site, client: httpx.AsyncClient
) -> None:
    operator = bearer(site.gw.store)
    everything = (await client.get("/api/windows", params={"since": T0}, headers=operator))
    assert "link" not in everything.headers  # all of it fits the default page
    full = everything.json()
    assert len(full) == 16  # 4 machines x (3 closed + 1 open), in ties of 4 per start
    walked, pages = await walk(client, "/api/windows", {"since": T0, "limit": 3}, operator)
    assert pages == 6
    assert [window_key(w) for w in walked] == [window_key(w) for w in full]


async def test_windows_added_between_pages_neither_repeat_nor_shift_the_walk(
    site: Site, client: httpx.AsyncClient
) -> None:
    operator = bearer(site.gw.store)
    first = await client.get("/api/windows", params={"since": T0, "limit": 5}, headers=operator)
    seen = [window_key(w) for w in first.json()]
    site.minutes(4)  # closes the open windows, opens new ones: newer than the cursor
    url: str | None = first.links["next"]["url"]
    while url is not None:
        answer = await client.get(url, headers=operator)
        seen += [window_key(w) for w in answer.json()]
        url = answer.links.get("next", {}).get("url")
    assert len(seen) == len(set(seen)) == 16
    assert {start for _, start in seen} == {T0 + i * 2 * MINUTE for i in range(4)}


async def test_an_owner_walks_only_its_own_windows(site: Site, client: httpx.AsyncClient) -> None:
    acme = bearer(site.gw.store, Role.OWNER, "acme")
    walked, pages = await walk(client, "/api/windows", {"since": T0, "limit": 2}, acme)
    assert (len(walked), pages) == (16, 8)
    other = bearer(site.gw.store, Role.OWNER, "someone-else")
    walked, _ = await walk(client, "/api/windows", {"since": T0, "limit": 2}, other)
    assert walked == []


async def test_alerts_silences_and_quarantine_walked_by_page_are_each_seen_once(
    site: Site, client: httpx.AsyncClient
) -> None:
    operator = bearer(site.gw.store)
    for i in range(5):
        made = await client.post("/api/silences", headers=operator,
                                 json={"matchers": {"machine": f"m-{i}"}, "duration": "1h"})
        assert made.status_code == 201, made.text
    site.reject(7)
    for path, limit, key, count in [
        ("/api/alerts", 3, lambda a: (a["rule"], a["machine"]), 8),
        ("/api/silences", 2, lambda s: s["id"], 5),
        ("/api/quarantine", 2, lambda q: q["id"], 7),
    ]:
        full = (await client.get(path, headers=operator)).json()
        assert len(full) == count, path
        walked, pages = await walk(client, path, {"limit": limit}, operator)
        assert [key(x) for x in walked] == [key(x) for x in full], path
        assert pages == -(-count // limit), path
    alerts = (await client.get("/api/alerts", headers=operator)).json()
    assert [a["severity"] for a in alerts] == ["critical"] * 4 + ["info"] * 4


@pytest.mark.parametrize(
    ("path", "cursor"),
    [
        ("/api/windows", "bm90LWEtY3Vyc29y"),  # base64 of "not-a-cursor"
        ("/api/alerts", "!!"),
        ("/api/quarantine", "WyJ3aW5kb3dzIixbMSwibSJdXQ"),  # a windows cursor
        ("/api/silences", "x" * 401),
    ],
)
async def test_a_cursor_that_is_not_one_of_this_list_is_a_422_naming_it(
    site: Site, client: httpx.AsyncClient, path: str, cursor: str
) -> None:
    answer = await client.get(path, params={"cursor": cursor}, headers=bearer(site.gw.store))
    body = assert_problem(answer, 422, path)
    assert [e["loc"] for e in body["errors"]] == [["query", "cursor"]]


# -- ETags ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/capacity", "/api/forecast"])
async def test_an_unchanged_answer_is_a_304_for_its_etag(
    site: Site, client: httpx.AsyncClient, path: str
) -> None:
    tenant = bearer(site.gw.store, Role.TENANT, "smallco")
    first = await client.get(path, headers=tenant)
    assert first.status_code == 200
    etag = first.headers["etag"]
    assert etag.startswith('W/"')
    assert first.headers["vary"] == "Authorization"
    again = await client.get(path, headers={**tenant, "If-None-Match": etag})
    assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag)
    listed = await client.get(path, headers={**tenant, "If-None-Match": f'W/"x", {etag}'})
    assert listed.status_code == 304
    other = await client.get(path, headers={**tenant, "If-None-Match": 'W/"other"'})
    assert (other.status_code, other.json()) == (200, first.json())
    operator = await client.get(path, headers={**bearer(site.gw.store), "If-None-Match": etag})
    assert operator.status_code == 200  # another principal, another answer, another tag


async def test_the_capacity_etag_changes_with_the_capacity(
    site: Site, client: httpx.AsyncClient
) -> None:
    tenant = bearer(site.gw.store, Role.TENANT, "smallco")
    first = await client.get("/api/capacity", headers=tenant)
    site.minutes(1)  # every machine runs again: nothing is offered
    changed = await client.get("/api/capacity",
                               headers={**tenant, "If-None-Match": first.headers["etag"]})
    assert changed.status_code == 200
    assert changed.headers["etag"] != first.headers["etag"]
    assert changed.json()["available"] == []


# -- the catalog ------------------------------------------------------------------------------


async def test_a_tenant_gets_the_catalog_of_what_it_may_book(tmp_path: Path) -> None:
    evenings = {
        "weekly": [{"days": ["weekdays"], "from": "18:00", "to": "06:00"},
                   {"days": ["weekend"], "from": "00:00", "to": "24:00"}],
        "blackouts": [{"from": "2026-12-24T00:00:00", "to": "2026-12-27T00:00:00"},
                      {"from": "2026-01-01T00:00:00", "to": "2026-01-02T00:00:00"}],
        "min_window_s": 7200,
        "min_idle_s": 900,
    }
    path = tmp_path / "site.yaml"
    path.write_text(
        site_yaml(
            {"photonics": [
                machine_config("laser-01", "acme-optics", capabilities=["laser-cutting"]),
                machine_config("laser-02", "lumen-group", capabilities=["laser-cutting"]),
                machine_config("coater-01", "umbra-works", capabilities=["coating"]),
            ]},
            influx=None,
            store=tmp_path / "gw.db",
            defaults=UNIT_DEFAULTS,
            timezone="Europe/Berlin",
            owners={
                "acme-optics": {"offering": evenings},
                "lumen-group": {"offering": "always", "show_to_tenants": True},
                "umbra-works": {},  # no policy: never offered, not in a tenant's catalog
            },
        )
    )
    gw = Gateway(load_config(path), clock_ms=Clock())
    transport = httpx.ASGITransport(app=create_app(gw))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
        tenant = await c.get("/api/catalog", headers=bearer(gw.store, Role.TENANT, "smallco"))
        assert tenant.status_code == 200, tenant.text
        plain = [{k: v for k, v in e.items() if k not in ("booking", "charge")}
                 for e in tenant.json()]  # the rules: test_the_catalog_shows_booking_rules...
        assert plain == [
            {"machine": "laser-01", "zone": "photonics", "capabilities": ["laser-cutting"],
             "owner": None, "offered": True, "min_idle_s": 900.0,
             "offering": "after 15 min idle, Mon to Fri 18:00 to 06:00 next day, Sat and Sun "
                         "all day (Europe/Berlin time), while at least 2 h of the offered hours "
                         "remain; not during 1 planned blackout ahead"},
            {"machine": "laser-02", "zone": "photonics", "capabilities": ["laser-cutting"],
             "owner": "lumen-group", "offered": True, "min_idle_s": 0.0,
             "offering": "as soon as idle, any time"},
        ]
        assert "umbra" not in tenant.text
        assert "coater" not in tenant.text

        umbra = await c.get("/api/catalog", headers=bearer(gw.store, Role.OWNER, "umbra-works"))
        assert [(e["machine"], e["offered"], e["offering"]) for e in umbra.json()] == [
            ("coater-01", False, "not offered: no offering policy applies to it")
        ]
        everything = await c.get("/api/catalog", headers=bearer(gw.store))
        assert [e["machine"] for e in everything.json()] == ["coater-01", "laser-01", "laser-02"]


async def test_the_catalog_shows_booking_rules_and_charges_as_applied(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(
        site_yaml(
            {"photonics": [
                # the machine's own keys over its owner's
                machine_config("laser-01", "acme-optics", booking={
                    "max_length_s": "4h", "min_notice_s": "2h",
                    "charge": {"rate_per_hour": 12.5, "minimum_s": "1h"}}),
                machine_config("laser-02", "lumen-group"),
            ]},
            influx=None,
            store=tmp_path / "gw.db",
            defaults={**UNIT_DEFAULTS, "offering": "always", "booking": {"buffer_s": "15m"}},
            owners={
                "acme-optics": {"booking": {
                    "min_length_s": "1h", "quota": {"hours": 8, "per": "week"},
                    "approval": True, "late_cancel_s": "2d",
                    "charge": {"rate_per_hour": 9, "step_s": "15m", "late_cancel_fee": 20,
                               "basis": "use", "unused_fraction": 0.5}}},
                "lumen-group": {},
            },
        )
    )
    gw = Gateway(load_config(path), clock_ms=Clock())
    transport = httpx.ASGITransport(app=create_app(gw))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
        answer = await c.get("/api/catalog", headers=bearer(gw.store, Role.TENANT, "smallco"))
    gw.store.close()
    assert answer.status_code == 200, answer.text
    laser_01, laser_02 = answer.json()
    assert laser_01["booking"] == {
        "min_length_s": 3600.0, "max_length_s": 14400.0, "step_s": 900.0,
        "min_notice_s": 7200.0, "horizon_s": 90 * 86400.0, "buffer_s": 900.0,
        "approval": True, "hold_s": 600.0,
        "quota": {"hours": 8.0, "per": "week", "period_s": 7 * 86400.0},
        "early_grace_s": 900.0, "no_show_grace_s": 900.0, "late_cancel_s": 2 * 86400.0,
        "rules": "1h-4h /15m, notice 2h, horizon 90d, buffer 15m, approval, quota 8h/week, "
                 "hold 10m, grace -15m/+15m, late cancel 2d",
    }
    assert laser_01["charge"] == {
        "basis": "use", "rate_per_hour": 12.5, "currency": "EUR", "step_s": 900.0,
        "minimum_s": 3600.0, "unused_fraction": 0.5, "no_show_fraction": 1.0,
        "late_cancel_fee": 20.0,
        "text": "12.50 EUR per hour of use (running time inside the booking, plus any "
                "overrun), in steps of 15m, at least 1h; booked time not used costs 0.5 of "
                "the rate; a no-show pays its booked time in full; cancelling later than 2d "
                "before the start: 20.00 EUR (waived when the slot is booked again)",
    }
    # pilotline's defaults, the site's buffer; no charge rule anywhere: null, not a price of 0
    assert laser_02["booking"]["max_length_s"] is None
    assert laser_02["booking"]["quota"] is None
    assert laser_02["booking"]["rules"] == (
        "15m-any /15m, notice 0, horizon 90d, buffer 15m, no approval, no quota, hold 10m, "
        "grace -15m/+15m, late cancel 1d"
    )
    assert laser_02["charge"] is None
    assert all(k not in answer.text for k in ("machines\"", "count"))  # still no fleet sizes

"""Who may call which route, and what each principal gets back: the access matrix.

A small plant with two owners (acme-optics hides its name from tenants, lumen-group shows
it), machines idle and running with telemetry values no tenant may see, windows and a
quarantined payload. Every route of the app is called as nobody, with a malformed, an unknown
and a revoked token, and as an operator, a scraper, each owner and a tenant; each answer's
status is checked against ``MATRIX`` and each body against what that principal may see. A
route added to the API without an ``allow(...)`` declaration, or missing from ``MATRIX``,
fails here.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute
from structlog.testing import capture_logs
from tests.auth import bearer
from tests.fakes import T0, Clock
from tests.sites import UNIT_DEFAULTS, machine_config, site_yaml

from pilotline.collectors.mqtt.collector import AckToken, Quarantined
from pilotline.gateway.api.app import create_app
from pilotline.gateway.api.auth import roles_of
from pilotline.gateway.config import load_config
from pilotline.gateway.forecasts import update_forecasts
from pilotline.gateway.service import Gateway
from pilotline.gateway.store.tokens import Role
from pilotline.rules import Sample

ZONES = {
    "photonics": [
        machine_config("laser-01", "acme-optics", capabilities=["laser-cutting"]),
        machine_config("cam-02", "acme-optics", capabilities=["optical-inspection"]),
        machine_config("bonder-01", "lumen-group", capabilities=["bonding"]),
        machine_config("coater-01", "lumen-group", capabilities=["coating"]),
    ]
}
ALERTS = {
    "rules": [
        {"name": "idle-now", "severity": "info", "state": "idle", "message": "{machine} is {state}"}
    ]
}

ACME = {"laser-01", "cam-02"}
LUMEN = {"bonder-01", "coater-01"}
# Telemetry values: they must reach no tenant through any route.
TELEMETRY = {"laser-01": 812.625, "cam-02": 733.375, "bonder-01": 91.125, "coater-01": 655.875}
SECRET_PAYLOAD = b'{"ts": "garbage", "recipe": "acme-secret-recipe-77"}'

ANON = "nobody"
PRINCIPALS = [ANON, "malformed", "unknown", "revoked", "operator", "scraper",
              "owner:acme-optics", "owner:lumen-group", "tenant"]

# route -> status for each principal (401 for the four without a valid token everywhere but
# /health). Owners and tenants are further checked on what the body holds.
MATRIX: dict[str, dict[str, int]] = {
    "/health": dict.fromkeys(PRINCIPALS, 503),  # anyone; 503: the MQTT broker is not running
    "/metrics": {"operator": 200, "scraper": 200, "owner:acme-optics": 403,
                 "owner:lumen-group": 403, "tenant": 403},
    "/openapi.json": {"operator": 200, "scraper": 403, "owner:acme-optics": 200,
                      "owner:lumen-group": 200, "tenant": 200},
    "/api/machines": {"operator": 200, "scraper": 403, "owner:acme-optics": 200,
                      "owner:lumen-group": 200, "tenant": 403},
    "/api/capacity": {"operator": 200, "scraper": 403, "owner:acme-optics": 200,
                      "owner:lumen-group": 200, "tenant": 200},
    "/api/catalog": {"operator": 200, "scraper": 403, "owner:acme-optics": 200,
                     "owner:lumen-group": 200, "tenant": 200},
    "/api/windows": {"operator": 200, "scraper": 403, "owner:acme-optics": 200,
                     "owner:lumen-group": 200, "tenant": 403},
    "/api/forecast": {"operator": 200, "scraper": 403, "owner:acme-optics": 200,
                      "owner:lumen-group": 200, "tenant": 200},
    "/api/utilization": {"operator": 200, "scraper": 403, "owner:acme-optics": 200,
                         "owner:lumen-group": 200, "tenant": 403},
    "/api/alerts": {"operator": 200, "scraper": 403, "owner:acme-optics": 200,
                    "owner:lumen-group": 200, "tenant": 403},
    "/api/quarantine": {"operator": 200, "scraper": 403, "owner:acme-optics": 403,
                        "owner:lumen-group": 403, "tenant": 403},
    # Writes: operators only (idle-now fires on laser-01; no silence has the id laser-01).
    "POST /api/alerts/ack": {"operator": 200, "scraper": 403, "owner:acme-optics": 403,
                             "owner:lumen-group": 403, "tenant": 403},
    "/api/silences": {"operator": 200, "scraper": 403, "owner:acme-optics": 403,
                      "owner:lumen-group": 403, "tenant": 403},
    "POST /api/silences": {"operator": 201, "scraper": 403, "owner:acme-optics": 403,
                           "owner:lumen-group": 403, "tenant": 403},
    "DELETE /api/silences/{silence_id}": {"operator": 404, "scraper": 403,
                                          "owner:acme-optics": 403, "owner:lumen-group": 403,
                                          "tenant": 403},
    # Booking: offers and the lists for everyone but scrapers, each filtered (owners: their
    # machines; tenants: their own bookings). The operator books laser-01 for smallco first,
    # so the tenant's same request conflicts; no reservation has the id laser-01 (404).
    "/api/offers": {"operator": 200, "scraper": 403, "owner:acme-optics": 200,
                    "owner:lumen-group": 200, "tenant": 200},
    "POST /api/reservations": {"operator": 201, "scraper": 403, "owner:acme-optics": 403,
                               "owner:lumen-group": 403, "tenant": 409},
    "/api/reservations": {"operator": 200, "scraper": 403, "owner:acme-optics": 200,
                          "owner:lumen-group": 200, "tenant": 200},
    "/api/reservations/{rid}": {"operator": 404, "scraper": 403, "owner:acme-optics": 404,
                                "owner:lumen-group": 404, "tenant": 404},
    "POST /api/reservations/{rid}/confirm": {"operator": 404, "scraper": 403,
                                             "owner:acme-optics": 403,
                                             "owner:lumen-group": 403, "tenant": 404},
    "POST /api/reservations/{rid}/approve": {"operator": 404, "scraper": 403,
                                             "owner:acme-optics": 404,
                                             "owner:lumen-group": 404, "tenant": 403},
    "POST /api/reservations/{rid}/reject": {"operator": 404, "scraper": 403,
                                            "owner:acme-optics": 404,
                                            "owner:lumen-group": 404, "tenant": 403},
    "POST /api/reservations/{rid}/cancel": {"operator": 404, "scraper": 403,
                                            "owner:acme-optics": 404,
                                            "owner:lumen-group": 404, "tenant": 404},
    # Usage statements: each filtered as the reservations (tests/gateway/test_usage_api.py).
    "/api/usage": {"operator": 200, "scraper": 403, "owner:acme-optics": 200,
                   "owner:lumen-group": 200, "tenant": 200},
    "POST /api/reservations/{rid}/extend": {"operator": 404, "scraper": 403,
                                            "owner:acme-optics": 404,
                                            "owner:lumen-group": 404, "tenant": 404},
    "POST /api/reservations/{rid}/move": {"operator": 404, "scraper": 403,
                                          "owner:acme-optics": 404,
                                          "owner:lumen-group": 404, "tenant": 404},
    # Calendar feeds: each principal but scrapers gets its own feed URL, then revokes it
    # (POST is called first); the feed itself takes no bearer token, its path is the credential, and
    # "laser-01" is no feed token: 404 for everyone, whatever the header.
    "POST /api/feeds": {"operator": 201, "scraper": 403, "owner:acme-optics": 201,
                        "owner:lumen-group": 201, "tenant": 201},
    "DELETE /api/feeds": {"operator": 204, "scraper": 403, "owner:acme-optics": 204,
                          "owner:lumen-group": 204, "tenant": 204},
    "/ical/{feed}.ics": dict.fromkeys(PRINCIPALS, 404),
}
OPEN = {"/health", "/ical/{feed}.ics"}
"""Routes that take no bearer token."""
# The JSON body sent to each route that takes one.
BODIES: dict[str, object] = {
    "POST /api/alerts/ack": {"rule": "idle-now", "machine": "laser-01"},
    "POST /api/silences": {"matchers": {"zone": "photonics"}, "duration": "1h"},
    "POST /api/reservations": {"machine": "laser-01", "start": T0 + 3_600_000,
                               "end": T0 + 7_200_000, "tenant": "smallco"},
    "POST /api/reservations/{rid}/extend": {"end": T0 + 10_800_000},
    "POST /api/reservations/{rid}/move": {"start": T0 + 7_200_000, "end": T0 + 10_800_000},
}
for _row in MATRIX.values():
    for _p in (ANON, "malformed", "unknown", "revoked"):
        _row.setdefault(_p, 401)


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    path = tmp_path / "site.yaml"
    path.write_text(
        site_yaml(
            ZONES,
            influx=None,
            store=tmp_path / "gw.db",
            defaults={**UNIT_DEFAULTS, "stale_after_s": 3600, "offering": "always"},
            owners={
                "acme-optics": {"show_to_tenants": False},
                "lumen-group": {"show_to_tenants": True},
            },
            alerts=ALERTS,
        )
    )
    clock = Clock()
    gw = Gateway(load_config(path), clock_ms=clock)
    idle, running = {"state": "NotExecuting"}, {"state": "Executing"}
    seq = 0
    for machine, states in {
        "laser-01": [idle],
        "cam-02": [idle, running],  # a closed window
        "bonder-01": [idle],
        "coater-01": [running],
    }.items():
        for i, state in enumerate(states):
            seq += 1
            values = {**state, "power_w": TELEMETRY[machine]}
            clock.ms = T0 + i * 60_000  # each arrives on time
            gw.ingest.sample(Sample(machine, T0 + i * 60_000, values), AckToken(1, seq, seq))
            gw.commit()
    gw.ingest.reject("mqtt", Quarantined("t/laser-01", "bad_ts", SECRET_PAYLOAD, T0, "laser-01"),
                     AckToken(1, 99, 99))
    gw.commit()
    clock.ms = T0 + 300_000
    gw.ingest.advance(clock.ms)
    gw.commit()
    return gw


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
        yield c


def headers_for(gateway: Gateway) -> dict[str, dict[str, str]]:
    store = gateway.store
    revoked = bearer(store, Role.TENANT, "smallco")
    store.tokens().revoke(store.tokens().list()[-1].name, now_ms=T0)
    return {
        ANON: {},
        "malformed": {"Authorization": "Basic dXNlcjpwYXNz"},
        "unknown": {"Authorization": "Bearer plt_0badc0de_" + "A" * 43},
        "revoked": revoked,
        "operator": bearer(store, Role.OPERATOR),
        "scraper": bearer(store, Role.SCRAPER),
        "owner:acme-optics": bearer(store, Role.OWNER, "acme-optics"),
        "owner:lumen-group": bearer(store, Role.OWNER, "lumen-group"),
        "tenant": bearer(store, Role.TENANT, "smallco"),
    }


def api_routes(gateway: Gateway) -> list[APIRoute]:
    """The API's routes; the board's HTML pages (``/board``: sessions, not bearer tokens) are
    checked as every role in tests/gateway/test_board.py."""
    routes = create_app(gateway).routes
    assert all(isinstance(r, APIRoute) for r in routes), "routes these checks cannot see"
    return [r for r in routes if isinstance(r, APIRoute) and not r.path.startswith("/board")]


def route_keys(route: APIRoute) -> list[str]:
    """MATRIX keys of a route: its path for GET, ``METHOD path`` for the others."""
    return [route.path if m == "GET" else f"{m} {route.path}" for m in sorted(route.methods)]


def concrete(path: str) -> str:
    """A route template with its parameters filled with an acme machine."""
    return re.sub(r"\{[^}]+\}", "laser-01", path)


def test_every_route_declares_who_may_call_it_and_is_in_the_matrix(gateway: Gateway) -> None:
    for route in api_routes(gateway):
        declared = [roles_of(d) for d in route.dependant.dependencies]
        roles = [r for r in declared if r is not None]
        if route.path == "/health":
            assert roles == [], "/health is open to anyone"
            continue
        if route.path in OPEN:
            assert roles == [], f"{route.path} takes no bearer token"
        else:
            assert roles, (
                f"{route.path} declares no roles: add dependencies=[OPERATORS] or similar"
            )
        for key in route_keys(route):
            assert key in MATRIX, (
                f"{key} is not in MATRIX of tests/gateway/test_api_access.py: add its row"
            )


async def test_every_route_as_every_principal(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    headers = headers_for(gateway)
    keys = [key for r in api_routes(gateway) for key in route_keys(r)]
    failures = []
    for key in keys:
        expected = MATRIX.get(key, {})
        method, _, path = key.rpartition(" ")
        for who in PRINCIPALS:
            answer = await client.request(
                method or "GET", concrete(path), headers=headers[who], json=BODIES.get(key)
            )
            want = expected.get(who, 401 if who in (ANON, "malformed", "unknown", "revoked")
                                else None)
            if want is not None and answer.status_code != want:
                failures.append(f"{key} as {who}: {answer.status_code}, expected {want}")
            if answer.status_code == 401:
                assert answer.headers["www-authenticate"] == "Bearer"
            if answer.status_code == 200:
                failures.extend(f"{key} as {who}: {p}" for p in leaks(who, path, answer.text))
    assert failures == [], "\n".join(failures)


def leaks(who: str, path: str, body: str) -> list[str]:
    """What in ``body`` ``who`` must not see."""
    found = []
    if who == "tenant":
        for machine, value in TELEMETRY.items():
            if str(value) in body:
                found.append(f"telemetry value of {machine}")
        if "acme-optics" in body:
            found.append("the name of an owner who hides it")
        if "acme-secret-recipe" in body:
            found.append("a quarantined payload")
        if path != "/openapi.json" and ('"running"' in body or '"state"' in body):
            found.append("machine states")
    elif who.startswith("owner:"):
        theirs = LUMEN if who == "owner:acme-optics" else ACME
        other_owner = "lumen-group" if who == "owner:acme-optics" else "acme-optics"
        for machine in theirs:
            if machine in body:
                found.append(f"another owner's machine {machine}")
            if str(TELEMETRY[machine]) in body:
                found.append(f"telemetry of {machine}")
        if other_owner in body:
            found.append(f"another owner's name {other_owner}")
        if "acme-secret-recipe" in body:
            found.append("a quarantined payload")
    return found


async def test_what_each_principal_sees(gateway: Gateway, client: httpx.AsyncClient) -> None:
    h = headers_for(gateway)

    async def get(path: str, who: str) -> object:
        answer = await client.get(path, headers=h[who])
        assert answer.status_code == 200, answer.text
        return answer.json()

    machines = await get("/api/machines", "operator")
    assert {m["id"] for m in machines} == ACME | LUMEN  # type: ignore[union-attr,index]
    machines = await get("/api/machines", "owner:acme-optics")
    assert {m["id"] for m in machines} == ACME  # type: ignore[union-attr,index]

    capacity = await get("/api/capacity", "tenant")
    offered = {c["machine"]: c["owner"] for c in capacity["available"]}  # type: ignore[index]
    assert offered == {"laser-01": None, "bonder-01": "lumen-group"}
    assert capacity["idle_not_yet_available"] == []  # type: ignore[index]
    capacity = await get("/api/capacity", "owner:lumen-group")
    assert {c["machine"] for c in capacity["available"]} == {"bonder-01"}  # type: ignore[index]
    assert capacity["machines"] == 2  # type: ignore[index]
    capacity = await get("/api/capacity", "operator")
    assert {c["owner"] for c in capacity["available"]} == {"acme-optics", "lumen-group"}  # type: ignore[index]

    windows = await get(f"/api/windows?since={T0}", "owner:acme-optics")
    assert {w["machine"] for w in windows} == {"laser-01", "cam-02"}  # type: ignore[union-attr,index]
    # naming another owner's machine gives nothing, not its windows
    assert await get(f"/api/windows?since={T0}&machine=bonder-01", "owner:acme-optics") == []
    windows = await get(f"/api/windows?since={T0}", "operator")
    assert {w["machine"] for w in windows} == {"laser-01", "cam-02", "bonder-01"}  # type: ignore[union-attr,index]

    quarantine = await get("/api/quarantine", "operator")
    assert "acme-secret-recipe" in json.dumps(quarantine)


HOUR = 3_600_000


async def test_a_tenant_counts_and_forecasts_only_what_is_offered(tmp_path: Path) -> None:
    """The fleet and the hours no policy offers are the owners' business: a tenant's
    ``machines`` counts the machines offered now, its forecast lists only offered hours."""
    blackout_6h = {"blackouts": [{"from": "2026-11-26T00:00:00Z", "to": "2026-11-27T06:00:00Z"}]}
    blackout_month = {"blackouts": [{"from": "2026-11-26T00:00:00Z",
                                     "to": "2026-12-31T00:00:00Z"}]}
    cut = ["laser-cutting"]
    path = tmp_path / "site.yaml"
    path.write_text(
        site_yaml(
            {"photonics": [
                machine_config("laser-01", "acme-optics", capabilities=cut),  # idle, offered
                machine_config("laser-02", "acme-optics", capabilities=cut),  # running
                machine_config("laser-03", "umbra-works", capabilities=cut),  # idle, blackout 6 h
                machine_config("laser-04", "umbra-works", capabilities=cut,
                               offering=blackout_month),  # idle, its own month-long blackout
            ]},
            influx=None,
            store=tmp_path / "gw.db",
            defaults={**UNIT_DEFAULTS, "stale_after_s": 3600},
            owners={"acme-optics": {"offering": {}}, "umbra-works": {"offering": blackout_6h}},
        )
    )
    clock = Clock()
    gw = Gateway(load_config(path), clock_ms=clock)
    for seq, (machine, state) in enumerate(
        [("laser-01", "NotExecuting"), ("laser-02", "Executing"), ("laser-03", "NotExecuting"),
         ("laser-04", "NotExecuting")], start=1
    ):
        gw.ingest.sample(Sample(machine, T0, {"state": state}), AckToken(1, seq, seq))
    gw.commit()
    clock.ms = T0 + 300_000
    gw.ingest.advance(clock.ms)
    gw.commit()
    gw.forecasts, _ = await update_forecasts(gw, clock.ms, None)
    tenant = bearer(gw.store, Role.TENANT, "smallco")
    operator = bearer(gw.store, Role.OPERATOR)
    transport = httpx.ASGITransport(app=create_app(gw))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
        for query in ("", "?capability=laser-cutting"):
            seen = (await c.get(f"/api/capacity{query}", headers=tenant)).json()
            assert [a["machine"] for a in seen["available"]] == ["laser-01"]
            assert seen["machines"] == 1, "the fleet size, told to a tenant"
            everything = (await c.get(f"/api/capacity{query}", headers=operator)).json()
            assert everything["machines"] == 4

        forecast = {f["machine"]: f["hours"]
                    for f in (await c.get("/api/forecast", headers=tenant)).json()}
        assert sorted(forecast) == ["laser-01", "laser-02", "laser-03"]  # not laser-04
        assert all(h["offered_min"] > 0 for hours in forecast.values() for h in hours)
        assert len(forecast["laser-01"]) == 48
        assert min(h["start_ms"] for h in forecast["laser-03"]) == T0 + 6 * HOUR
        everything = (await c.get("/api/forecast", headers=operator)).json()
        assert {f["machine"]: len(f["hours"]) for f in everything} == dict.fromkeys(
            ["laser-01", "laser-02", "laser-03", "laser-04"], 48
        )


async def test_refusals_are_counted_and_logged_without_the_token(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    h = headers_for(gateway)
    wrong = "plt_0badc0de_" + "B" * 43
    with capture_logs() as logs:
        await client.get("/api/machines")
        await client.get("/api/machines", headers={"Authorization": f"Bearer {wrong}"})
        await client.get("/api/machines", headers=h["revoked"])
        await client.get("/api/machines", headers=h["tenant"])
        await client.get("/api/machines", headers={"Authorization": "Bearer " + "x" * 5000})
    assert gateway.metrics.auth_failures == {
        "missing": 1, "unknown": 1, "revoked": 1, "forbidden": 1, "malformed": 1,
    }
    failed = [entry for entry in logs if entry["event"] == "api.auth_failed"]
    assert [f["reason"] for f in failed] == [
        "missing", "unknown", "revoked", "forbidden", "malformed",
    ]
    assert wrong not in repr(logs)
    assert h["revoked"]["Authorization"].split()[1] not in repr(logs)
    metrics = (await client.get("/metrics", headers=h["operator"])).text
    assert 'pilotline_auth_failures_total{reason="revoked"} 1.0' in metrics
    assert wrong not in metrics


async def test_each_authenticated_request_is_audited(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    h = headers_for(gateway)
    with capture_logs() as logs:
        await client.get("/api/capacity", headers=h["tenant"])
        await client.get("/api/quarantine", headers=h["owner:acme-optics"])
    audit = [entry for entry in logs if entry["event"] == "api.access"]
    assert [(a["principal"].split("-")[1], a["role"], a["route"], a["status"]) for a in audit] == [
        ("tenant", "tenant", "/api/capacity", 200),
        ("owner", "owner", "/api/quarantine", 403),
    ]
    assert audit[1]["subject"] == "acme-optics"
    assert "Bearer" not in repr(logs)


async def test_a_revoked_token_stops_working_at_once(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    token = gateway.store.tokens().create("ops", Role.OPERATOR, None, now_ms=T0)
    auth = {"Authorization": f"Bearer {token}"}
    assert (await client.get("/api/machines", headers=auth)).status_code == 200
    assert gateway.store.tokens().revoke("ops", now_ms=T0)
    assert (await client.get("/api/machines", headers=auth)).status_code == 401


async def test_bodies_and_ranges_are_bounded(gateway: Gateway, client: httpx.AsyncClient) -> None:
    h = headers_for(gateway)["operator"]
    big = await client.request("GET", "/api/capacity", headers=h, content=b"x" * 70_000)
    assert big.status_code == 413
    too_far = await client.get("/api/windows", params={"since": T0 - 400 * 86_400_000}, headers=h)
    assert too_far.status_code == 422
    too_many = await client.get("/api/windows", params={"limit": 10_001}, headers=h)
    assert too_many.status_code == 422
    long_since = await client.get("/api/windows", params={"since": "1" * 41}, headers=h)
    assert long_since.status_code == 422


def test_tokens_are_stored_hashed(gateway: Gateway) -> None:
    token = gateway.store.tokens().create("hashed", Role.OPERATOR, None, now_ms=T0)
    assert re.fullmatch(r"plt_[0-9a-f]{8}_[A-Za-z0-9_-]{43}", token)
    gateway.store.close()
    raw = gateway.config.store.read_bytes()
    wal = gateway.config.store.with_name(gateway.config.store.name + "-wal")
    raw += wal.read_bytes() if wal.exists() else b""
    assert token.encode() not in raw
    # the secret is all after "plt_<id>_"; it may itself contain "_" (base64url)
    assert token.split("_", 2)[2].encode() not in raw

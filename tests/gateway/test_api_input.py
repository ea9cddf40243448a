"""What operators and owners send the API is checked before anything is stored or computed.

Through the real app (``create_app`` over a real gateway and store, httpx's ASGI transport
with the app's own error handling, so a crash is the 500 a client would get):

- every time a route takes (``since``, ``from``, ``to``, a silence's ``starts_at`` and
  ``ends_at``) that is not a time the API can keep and print is a 422 naming the parameter;
- a silence that would end after the year 9999 is refused and not stored;
- a bad silence row already in the store (an older version let one in, or the file was edited)
  neither makes ``GET /api/silences`` fail nor stops the gateway from starting again;
- at most ``alerts.max_silences`` silences are active or to come (409 beyond).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs
from tests.auth import bearer
from tests.fakes import T0, Clock
from tests.sites import UNIT_DEFAULTS, load_text, machine_config, refused, site_yaml

from pilotline.gateway.api.app import create_app
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway
from pilotline.gateway.store.tokens import Role

ZONES = {"photonics": [machine_config("laser-01", "acme"), machine_config("cam-02", "acme")]}

Start = Callable[..., Gateway]


@pytest.fixture
def start(tmp_path: Path) -> Start:
    """A gateway on ``tmp_path``'s site file and store; called again, the same store."""

    def start(**alerts: Any) -> Gateway:
        path = tmp_path / "site.yaml"
        path.write_text(
            site_yaml(ZONES, influx=None, store=tmp_path / "gw.db", defaults=UNIT_DEFAULTS,
                      alerts=alerts or None)
        )
        return Gateway(load_config(path), clock_ms=Clock(T0))

    return start


@pytest.fixture
async def api(start: Start) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    gateway = start()
    async with client(gateway) as c:
        yield c, bearer(gateway.store, Role.OPERATOR)


def client(gateway: Gateway) -> httpx.AsyncClient:
    # raise_app_exceptions=False: an unhandled error is the 500 a real client gets.
    transport = httpx.ASGITransport(app=create_app(gateway), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://api")


NOT_TIMES = [
    "9999999999999999999",  # past SQLite's 64-bit integers
    "9999999999999999",  # epoch ms in the year 318857
    "²",  # str.isdigit() says yes, int() says no
    "٣",  # int() reads an Arabic-Indic 3
    "-1",
    "10000-01-01T00:00:00Z",
    "9999-12-31T23:00:00-05:00",  # the year 10000 in UTC
    "0001-01-01T00:00:00+01:00",  # the year 0 in UTC
    "2026-13-01T00:00:00Z",
    "2026-11-27T00:00:00",  # no zone
    "1" * 41,
]
TIME_PARAMETERS = [("/api/windows", "since"), ("/api/utilization", "from"),
                   ("/api/utilization", "to")]


@pytest.mark.parametrize("value", NOT_TIMES)
@pytest.mark.parametrize(("route", "name"), TIME_PARAMETERS)
async def test_a_query_value_that_is_not_a_time_is_a_422_naming_it(
    api: tuple[httpx.AsyncClient, dict[str, str]], route: str, name: str, value: str
) -> None:
    c, operator = api
    answer = await c.get(route, params={name: value}, headers=operator)
    assert answer.status_code == 422, answer.text
    assert [e["loc"] for e in answer.json()["errors"]] == [["query", name]], answer.text


async def test_times_in_range_are_still_accepted(
    api: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    c, operator = api
    for params in ({"since": str(T0)}, {"since": "2026-11-26T12:00:00+01:00"}):
        assert (await c.get("/api/windows", params=params, headers=operator)).status_code == 200
    both = {"from": "2026-11-26T00:00:00Z", "to": str(T0)}
    assert (await c.get("/api/utilization", params=both, headers=operator)).status_code == 200


@pytest.mark.parametrize(
    ("body", "name"),
    [
        ({"starts_at": "9999-12-31T00:00:00Z", "duration": "2d"}, "starts_at"),
        ({"starts_at": "9999-12-31T23:00:00-05:00", "duration": "1h"}, "starts_at"),
        ({"ends_at": "9999-12-31T23:30:00-05:00"}, "ends_at"),
        ({"ends_at": 10**20}, "ends_at"),
        ({"ends_at": "²"}, "ends_at"),
        ({"ends_at": True}, "ends_at"),
        ({"ends_at": 1.5}, "ends_at"),
    ],
)
async def test_a_silence_past_the_year_9999_is_refused_and_not_stored(
    api: tuple[httpx.AsyncClient, dict[str, str]], body: dict[str, Any], name: str
) -> None:
    c, operator = api
    answer = await c.post(
        "/api/silences", json={"matchers": {"zone": "photonics"}, **body}, headers=operator
    )
    assert answer.status_code == 422, answer.text
    errors = answer.json()["errors"]
    assert name in str([e["loc"] for e in errors]), errors
    listed = await c.get("/api/silences", headers=operator)
    assert (listed.status_code, listed.json()) == (200, [])


async def test_a_silence_starts_at_most_a_year_ahead(
    api: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    c, operator = api
    body = {"matchers": {"zone": "photonics"}, "starts_at": "2036-01-01T00:00:00Z",
            "duration": "1h"}
    answer = await c.post("/api/silences", json=body, headers=operator)
    assert answer.status_code == 422
    assert "366 days ahead" in answer.text


def _insert_rows(db_path: Path, rows: list[tuple[Any, ...]]) -> None:
    with sqlite3.connect(db_path) as db:
        db.executemany(
            "INSERT INTO silences (id, matchers, starts_ms, ends_ms, created_by, comment,"
            " created_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    db.close()


async def test_bad_stored_silences_fail_neither_the_list_nor_a_restart(
    start: Start, tmp_path: Path
) -> None:
    gateway = start()
    gateway.store.close()
    _insert_rows(tmp_path / "gw.db", [
        # what the unchecked POST stored: an end past the year 9999; then rows the dispatcher
        # would refuse, or that are no silence at all
        ("far", '{"zone": "photonics"}', T0, 253_402_318_800_000, "op", "", T0),
        ("notjson", "{zone", T0, T0 + 3_600_000, "op", "", T0),
        ("colour", '{"colour": "red"}', T0, T0 + 3_600_000, "op", "", T0),
        ("nomatch", "{}", T0, T0 + 3_600_000, "op", "", T0),
        ("backwards", '{"zone": "photonics"}', T0 + 7_200_000, T0 + 3_600_000, "op", "", T0),
        ("text", '{"zone": "photonics"}', "soon", T0 + 3_600_000, "op", "", T0),
    ])

    with capture_logs() as logs:
        gateway = start()  # the restart: the dispatcher takes the stored silences back
    unreadable = sorted(e["silence"] for e in logs if e["event"] == "alerts.silence_unreadable")
    assert unreadable == ["colour", "nomatch", "notjson", "text"]
    operator = bearer(gateway.store, Role.OPERATOR)
    async with client(gateway) as c:
        listed = await c.get("/api/silences", headers=operator)
        assert listed.status_code == 200, listed.text
        backwards, far = listed.json()  # one ended before it started: listed, never active
        assert (backwards["id"], backwards["active"]) == ("backwards", False)
        assert (far["id"], far["ends_at"], far["active"]) == (
            "far", "9999-12-31T23:59:59.999+00:00", True
        )
        ended = await c.delete("/api/silences/far", headers=operator)  # and it can be ended
        assert ended.status_code == 200, ended.text
        assert ended.json()["active"] is False


async def test_active_silences_are_capped(start: Start) -> None:
    gateway = start(max_silences=3)
    operator = bearer(gateway.store, Role.OPERATOR)
    async with client(gateway) as c:

        async def silence(machine: str) -> httpx.Response:
            body = {"matchers": {"machine": machine}, "duration": "1h"}
            return await c.post("/api/silences", json=body, headers=operator)

        made = [await silence(f"m-{i}") for i in range(3)]
        assert [m.status_code for m in made] == [201, 201, 201]
        full = await silence("m-3")
        assert full.status_code == 409
        assert "alerts.max_silences" in full.json()["detail"]
        assert len((await c.get("/api/silences", headers=operator)).json()) == 3
        ended = await c.delete(f"/api/silences/{made[0].json()['id']}", headers=operator)
        assert ended.status_code == 200
        assert (await silence("m-3")).status_code == 201


def test_max_silences_is_configured_and_a_bad_one_refused_with_its_path(tmp_path: Path) -> None:
    assert load_text(tmp_path, site_yaml(ZONES, influx=None)).alerts.max_silences == 1000
    five = load_text(tmp_path, site_yaml(ZONES, influx=None, alerts={"max_silences": 5}))
    assert five.alerts.max_silences == 5
    issues = refused(tmp_path, site_yaml(ZONES, influx=None, alerts={"max_silences": 0}))
    assert [i.path for i in issues] == ["alerts.max_silences"]

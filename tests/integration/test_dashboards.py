"""Every InfluxQL query of the Grafana dashboards, run against a real InfluxDB 1.x.

A known plant history is written in line protocol made by
``pilotline.gateway.sinks.influx.points`` (the exact lines the gateway writes; ``alert``
lines follow DESIGN.md's schema until the alerting issue adds their function), then every
panel query and template-variable query of
``deploy/grafana/dashboards/*.json`` runs with Grafana's variables substituted. A query that
fails or returns nothing fails the test, and every panel has its expected rows here, so a
panel added without a check fails too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.fakes import T0
from tests.peers import InfluxDB1, PeerUnavailableError

from pilotline.gateway.sinks.influx.lineproto import line, series_key
from pilotline.gateway.sinks.influx.points import event_lines, telemetry_line
from pilotline.rules import State
from pilotline.rules.events import Capacity, IdleWindowClosed, StateChanged, ZoneCapacity

pytestmark = pytest.mark.integration

DASHBOARDS = Path(__file__).parents[2] / "deploy" / "grafana" / "dashboards"
SITE = "marseille-pilot"
MIN = 60_000
HOUR = 60 * MIN
RANGE = (T0, T0 + 6 * HOUR)  # the dashboard's time range in the test

# machine -> (zone, owner, [(minute, state)])
HISTORY: dict[str, tuple[str, str, list[tuple[int, State]]]] = {
    "laser-01": ("photonics", "acme-optics",
                 [(0, State.IDLE), (60, State.RUNNING), (180, State.IDLE)]),
    "laser-02": ("photonics", "lumen-group",
                 [(0, State.RUNNING), (120, State.DOWN), (150, State.MAINTENANCE),
                  (180, State.RUNNING)]),
    "cam-01": ("imaging", "visiotech",
               [(0, State.IDLE), (30, State.RUNNING), (240, State.OFFLINE)]),
}


def _at(minute: float) -> int:
    return T0 + int(minute * MIN)


def dataset() -> list[str]:
    lines: list[str] = []
    for machine, (zone, owner, changes) in HISTORY.items():
        previous = State.OFFLINE
        for minute, state in changes:
            lines += event_lines(
                SITE, StateChanged(machine, zone, owner, state, previous, _at(minute))
            )
            previous = state
        for minute in range(0, 360, 5):
            values = {"power_w": 100.0 + minute, "temp_c": 21.5}
            text = telemetry_line(SITE, zone, machine, values, _at(minute))
            assert text is not None
            lines.append(text)
    # Closed idle windows: laser-01 [0, 60 min) offered; cam-01 [0, 30 min) not offered.
    lines += event_lines(SITE, IdleWindowClosed("laser-01", "photonics", _at(0), _at(60), True))
    lines += event_lines(SITE, IdleWindowClosed("cam-01", "imaging", _at(0), _at(30), False))
    # Capacity: laser-01 offered after 15 min of idle, withdrawn at 60, offered again at 195
    # and still idle at the last periodic report (330 min: idle for 150 min).
    for minute, available, idle_for_s in [
        (15, True, 900.0), (60, False, 0.0), (195, True, 900.0), (330, True, 9000.0)
    ]:
        lines += event_lines(SITE, Capacity("laser-01", "photonics", "acme-optics",
                                            _at(minute), available, idle_for_s, available))
    for minute in (60, 330):
        lines += event_lines(SITE, Capacity("laser-02", "photonics", "lumen-group",
                                            _at(minute), False, 0.0, False))
    lines += event_lines(SITE, Capacity("cam-01", "imaging", "visiotech",
                                        _at(330), False, 0.0, False))
    for minute in (300, 330):
        for zone, capability, machines, available, running, down, offline in [
            ("photonics", "all", 2, 1, 1, 0, 0),
            ("photonics", "laser-cutting", 1, 1, 0, 0, 0),
            ("photonics", "laser-marking", 2, 1, 1, 0, 0),
            ("imaging", "all", 1, 0, 0, 0, 1),
            ("imaging", "optical-inspection", 1, 0, 0, 0, 1),
        ]:
            lines += event_lines(SITE, ZoneCapacity(zone, capability, _at(minute), machines,
                                                    available, running, down, offline))
    # alert (DESIGN.md): tags site, zone, machine, rule, severity; firing, value, message.
    for machine, zone, rule, severity, minute, firing, value, message in [
        ("laser-02", "photonics", "chiller_temp", "critical", 125, 1, 31.5, "chiller 31.5 C"),
        ("laser-02", "photonics", "chiller_temp", "critical", 150, 0, 24.0, "chiller back"),
        ("cam-01", "imaging", "stale_data", "warning", 241, 1, 61.0, "no data for 61 s"),
    ]:
        tags = {"site": SITE, "zone": zone, "machine": machine, "rule": rule,
                "severity": severity}
        assert series_key("alert", tags)  # the same escaping as every other point
        lines.append(line("alert", tags, {"firing": firing, "value": value,
                                          "message": message}, _at(minute)))
    # Another site, which no query filtered on $site may return.
    lines += event_lines("other-site", StateChanged("x-01", "photonics", "o", State.IDLE,
                                                    State.OFFLINE, _at(10)))
    return lines


# -- Grafana's substitutions ------------------------------------------------------------------

VARIABLES = {
    # single value, no escaping (Grafana leaves single values of non-multi variables as is)
    "site": SITE,
    # multi-value variables become a regex group of escaped values, as Grafana does
    "zone": r"(photonics|imaging)",
    "machine": r"(laser\-01|laser\-02|cam\-01)",
}
DETAIL_VARIABLES = {**VARIABLES, "machine": "laser-02"}


def substitute(query: str, variables: dict[str, str]) -> str:
    text = query.replace("$timeFilter", f"time >= {RANGE[0]}ms and time <= {RANGE[1]}ms")
    text = text.replace("$__interval", "1m")
    for name, value in variables.items():
        text = text.replace(f"${{{name}}}", value).replace(f"${name}", value)
    leftover = re.findall(r"\$\{?[A-Za-z_]\w*", text)
    assert not leftover, f"unsubstituted variable {leftover} in {text}"
    return text


def influx_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(panel title, refId, query) of every InfluxQL target, rows' nested panels included."""
    def walk(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels", []))

    for panel in walk(dashboard["panels"]):
        for target in panel.get("targets", []):
            if target.get("datasource", panel.get("datasource", {})).get("type") == "influxdb":
                assert target.get("rawQuery"), f"{panel['title']}: raw InfluxQL expected"
                yield panel["title"], target["refId"], target["query"]


def load(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((DASHBOARDS / name).read_text())
    return result


# -- results as plain rows ---------------------------------------------------------------------

Row = dict[str, Any]


def rows(results: list[dict[str, Any]]) -> list[Row]:
    """Flatten InfluxDB's series into rows: tags plus columns (time in epoch ms)."""
    out: list[Row] = []
    for result in results:
        for series in result.get("series", []):
            for values in series["values"]:
                out.append({**series.get("tags", {}), **dict(zip(series["columns"], values,
                                                                 strict=True))})
    return out


def by(rows_: list[Row], *keys: str) -> dict[tuple[Any, ...], Row]:
    return {tuple(r[k] for k in keys): r for r in rows_}


def approx(value: float, expected: float, tol: float = 2.5) -> bool:
    return abs(value - expected) <= tol


# -- expectations, one per panel query -----------------------------------------------------------


def _availability(r: list[Row]) -> None:
    got = by(r, "zone", "capability")
    assert set(got) == {("photonics", "all"), ("photonics", "laser-cutting"),
                        ("photonics", "laser-marking"), ("imaging", "all"),
                        ("imaging", "optical-inspection")}
    assert got["photonics", "all"]["available"] == 1
    assert got["photonics", "laser-marking"]["machines"] == 2
    assert got["imaging", "all"]["offline"] == 1


def _open_windows(r: list[Row]) -> None:
    assert [(x["machine"], x["idle_for_s"], x["available"], x["offered"]) for x in r] == [
        ("laser-01", 9000.0, 1, 1)
    ]
    assert r[0]["zone"] == "photonics"
    assert r[0]["owner"] == "acme-optics"
    assert r[0]["time"] == _at(330)


def _firing(r: list[Row]) -> None:
    assert [(x["machine"], x["rule"], x["severity"], x["message"], x["time"]) for x in r] == [
        ("cam-01", "stale_data", "warning", "no data for 61 s", _at(241))
    ]


def _states(r: list[Row]) -> None:
    got = sorted((x["machine"], x["time"], x["state"]) for x in r)
    expected = sorted((m, _at(minute), s.value) for m, (_, _, changes) in HISTORY.items()
                      for minute, s in changes)
    assert got == expected


def _states_detail(r: list[Row]) -> None:
    assert [(x["time"], x["state"]) for x in r] == [
        (_at(minute), s.value) for minute, s in HISTORY["laser-02"][2]
    ]


# share of the 6 h range (361 one-minute buckets, both ends included) per state, in %
def _share(minutes: float) -> float:
    return 100 * minutes / 361


def _utilization(r: list[Row]) -> None:
    got = by(r, "machine")
    assert set(got) == {("laser-01",), ("laser-02",), ("cam-01",)}
    laser1 = got["laser-01",]
    assert approx(laser1["idle"], _share(60 + 181))
    assert approx(laser1["running"], _share(120))
    laser2 = got["laser-02",]
    assert approx(laser2["running"], _share(120 + 181))
    assert approx(laser2["down"], _share(30))
    assert approx(laser2["maintenance"], _share(30))
    cam = got["cam-01",]
    assert approx(cam["offline"], _share(121))
    for row in r:
        total = sum(row[s.value] for s in State)
        assert approx(total, 100.0, 0.01), row


def _utilization_detail(r: list[Row]) -> None:
    assert len(r) == 1
    assert approx(r[0]["running"], _share(301))
    assert approx(r[0]["down"], _share(30))


def _available_by_zone(r: list[Row]) -> None:
    photonics = [x for x in r if x["zone"] == "photonics" and x["last"] is not None]
    imaging = [x for x in r if x["zone"] == "imaging" and x["last"] is not None]
    assert photonics[0]["time"] == _at(300)
    assert {x["last"] for x in photonics} == {1}
    assert {x["last"] for x in imaging} == {0}


def _recent_windows(r: list[Row]) -> None:
    # both windows start at T0: newest first cannot order them, so compare as a set
    assert {(x["time"], x["machine"], x["zone"], x["duration_s"], x["end_ms"], x["offered"])
            for x in r} == {
        (_at(0), "cam-01", "imaging", 1800.0, _at(30), 0),
        (_at(0), "laser-01", "photonics", 3600.0, _at(60), 1),
    }
    assert len(r) == 2


def _telemetry_detail(r: list[Row]) -> None:
    assert {"mean_power_w", "mean_temp_c"} <= set(r[0])
    assert len(r) == 72  # one 5-minute sample per 1-minute bucket, empty buckets dropped
    assert r[0]["mean_power_w"] == 100.0


def _idle_for_detail(r: list[Row]) -> None:
    assert r  # laser-02 is never idle: its idle_for_s is 0 in every capacity point
    assert {x["idle for"] for x in r} == {0.0}


def _available_detail(r: list[Row]) -> None:
    values = {x["available"] for x in r if x["available"] is not None}
    assert values == {0}


def _windows_detail(r: list[Row]) -> None:
    # laser-02 had no idle window: the query must still run; checked on laser-01 below
    assert r == []


def _alerts_detail(r: list[Row]) -> None:
    assert [(x["time"], x["rule"], x["firing"]) for x in r] == [
        (_at(150), "chiller_temp", 0), (_at(125), "chiller_temp", 1)
    ]


Check = Callable[[list[Row]], None]
EXPECTED: dict[tuple[str, str, str], Check] = {
    ("facility-overview.json", "Availability now by zone and capability", "A"): _availability,
    ("facility-overview.json", "Open idle windows", "A"): _open_windows,
    ("facility-overview.json", "Firing alerts", "A"): _firing,
    ("facility-overview.json", "Machine states", "A"): _states,
    ("facility-overview.json", "Utilization (share of time per state)", "A"): _utilization,
    ("facility-overview.json", "Available machines by zone", "A"): _available_by_zone,
    ("facility-overview.json", "Recent idle windows", "A"): _recent_windows,
    ("machine-detail.json", "Telemetry", "A"): _telemetry_detail,
    ("machine-detail.json", "State", "A"): _states_detail,
    ("machine-detail.json", "Utilization", "A"): _utilization_detail,
    ("machine-detail.json", "Idle for and availability", "A"): _idle_for_detail,
    ("machine-detail.json", "Idle for and availability", "B"): _available_detail,
    ("machine-detail.json", "Idle windows", "A"): _windows_detail,
    ("machine-detail.json", "Alerts", "A"): _alerts_detail,
}
# Queries allowed to return nothing for the variables above (and proven non-empty with others).
MAY_BE_EMPTY = {("machine-detail.json", "Idle windows", "A")}


@pytest.fixture(scope="module")
def influx() -> Iterator[InfluxDB1]:
    try:
        server = InfluxDB1().start()
    except PeerUnavailableError as exc:
        pytest.fail(str(exc))  # CI installs it: a missing peer is a failure, not a skip
    try:
        server.write(dataset())
        yield server
    finally:
        server.close()


def test_every_influxql_panel_query_returns_the_expected_rows(influx: InfluxDB1) -> None:
    seen = set()
    for name in ("facility-overview.json", "machine-detail.json"):
        variables = DETAIL_VARIABLES if name == "machine-detail.json" else VARIABLES
        for title, ref, query in influx_queries(load(name)):
            key = (name, title, ref)
            assert key in EXPECTED, f"no expected rows for {key}: add a check"
            result = rows(influx.query(substitute(query, variables)))
            if key not in MAY_BE_EMPTY:
                assert result, f"{key} returned nothing:\n{substitute(query, variables)}"
            EXPECTED[key](result)
            seen.add(key)
    assert seen == set(EXPECTED)


def test_machine_detail_windows_for_a_machine_that_had_one(influx: InfluxDB1) -> None:
    (query,) = [q for t, _, q in influx_queries(load("machine-detail.json"))
                if t == "Idle windows"]
    result = rows(influx.query(substitute(query, {**VARIABLES, "machine": "laser-01"})))
    assert [(x["time"], x["duration_s"], x["end_ms"], x["offered"]) for x in result] == [
        (_at(0), 3600.0, _at(60), 1)
    ]


def test_template_variables_list_sites_zones_and_machines(influx: InfluxDB1) -> None:
    for name in ("facility-overview.json", "machine-detail.json"):
        variables = {v["name"]: v for v in load(name)["templating"]["list"]}
        assert set(variables) == {"site", "zone", "machine"}
        values = {}
        for var in ("site", "zone", "machine"):
            query = substitute(variables[var]["query"], VARIABLES)
            values[var] = sorted(r["value"] for r in rows(influx.query(query)))
        assert values == {
            "site": ["marseille-pilot", "other-site"],
            "zone": ["imaging", "photonics"],
            "machine": ["cam-01", "laser-01", "laser-02"],
        }


def test_filters_keep_other_sites_and_zones_out(influx: InfluxDB1) -> None:
    (query,) = [q for t, _, q in influx_queries(load("facility-overview.json"))
                if t == "Machine states"]
    imaging = rows(influx.query(substitute(query, {**VARIABLES, "zone": "imaging"})))
    assert {r["machine"] for r in imaging} == {"cam-01"}
    other = rows(influx.query(substitute(query, {**VARIABLES, "site": "other-site",
                                                 "machine": r"(x\-01)"})))
    assert {r["machine"] for r in other} == {"x-01"}


def test_every_panel_names_its_data_source_and_queries_are_raw() -> None:
    for path in DASHBOARDS.glob("*.json"):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            if panel["type"] == "row":
                continue
            uid = panel["datasource"]["uid"]
            assert uid in {"pilotline-influxql", "pilotline-prometheus"}, (path, panel)
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == uid
                if uid == "pilotline-influxql":
                    # every measurement queried is one of the contract's
                    for m in re.findall(r'FROM "(\w+)"', target["query"]):
                        assert m in {"machine_state", "telemetry", "idle_window", "capacity",
                                     "zone_capacity", "alert"}, (path.name, m)

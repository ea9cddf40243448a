"""Every InfluxQL query of the Grafana dashboards, run against a real InfluxDB 1.x.

A known plant history is written in line protocol made by the gateway's own line builders
(``pilotline.gateway.sinks.influx.points``, ``pilotline.gateway.forecasts``; ``alert`` lines
through ``alert_rows``), with zone-level points from two shards after a former single-gateway
layout, then every panel query and template-variable query of
``deploy/grafana/dashboards/*.json`` runs with Grafana's variables substituted and over the
panel's own time range where it has one (``timeFrom``). A query that fails or returns nothing
fails the test, and every panel has its expected rows here, so a panel added without a check
fails too. Utilization, forecast and the zone sums are compared with figures worked out by
hand from the input.
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

from pilotline.gateway.forecasts import Forecasts, forecast_lines
from pilotline.gateway.sinks.influx.points import (
    alert_rows,
    event_lines,
    telemetry_line,
    utilization_rows,
)
from pilotline.rules import State
from pilotline.rules.alerts import AlertTransition
from pilotline.rules.events import Capacity, IdleWindowClosed, StateChanged, ZoneCapacity
from pilotline.rules.forecast import first_hour_ms
from pilotline.rules.utilization import StateChange, utilization

pytestmark = pytest.mark.integration

DASHBOARDS = Path(__file__).parents[2] / "deploy" / "grafana" / "dashboards"
SITE = "marseille-pilot"
MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
RANGE = (T0, T0 + 6 * HOUR)  # the dashboard's time range in the test (relative: "last 6 h")
NOW = RANGE[1]  # the time the test's dashboard is looked at
STATES = tuple(s.value for s in State)

# machine -> (zone, owner, [(minute, state)])
HISTORY: dict[str, tuple[str, str, list[tuple[int, State]]]] = {
    "laser-01": ("photonics", "acme-optics",
                 [(0, State.IDLE), (60, State.RUNNING), (180, State.IDLE)]),
    "laser-02": ("photonics", "lumen-group",
                 [(0, State.RUNNING), (120, State.DOWN), (150, State.MAINTENANCE),
                  (180, State.RUNNING), (300, State.IDLE)]),
    "cam-01": ("imaging", "visiotech",
               [(0, State.IDLE), (30, State.RUNNING), (240, State.OFFLINE)]),
}
ZONES = {machine: zone for machine, (zone, _, _) in HISTORY.items()}

# Zone-level points come from one gateway until minute 240, then from two gateways sharded by
# machine, each counting its own machines and tagging its points shard=K/N. The former
# layout's untagged series stay in the store: a panel must add the shards' parts, not pick
# one, and must not add the former layout's last report to them.
SHARDS = {"1/2": ("laser-01", "cam-01"), "2/2": ("laser-02",)}
# (minutes, shard, zone, capability, machines, available, running, down, offline)
RESERVED = {("2/2", "photonics", "all"): 1, ("2/2", "photonics", "laser-marking"): 1}
"""From minute 330 a booking holds laser-02 (``reserved`` of zone_capacity)."""
ZONE_REPORTS: list[tuple[tuple[int, ...], str, str, str, int, int, int, int, int]] = [
    # one gateway: laser-01 idle (available), laser-02 running, cam-01 running then offline
    ((200, 240), "", "photonics", "all", 2, 1, 1, 0, 0),
    ((200, 240), "", "photonics", "laser-cutting", 1, 1, 0, 0, 0),
    ((200, 240), "", "photonics", "laser-marking", 2, 1, 1, 0, 0),
    ((200,), "", "imaging", "all", 1, 0, 1, 0, 0),
    ((200,), "", "imaging", "optical-inspection", 1, 0, 1, 0, 0),
    ((240,), "", "imaging", "all", 1, 0, 0, 0, 1),
    ((240,), "", "imaging", "optical-inspection", 1, 0, 0, 0, 1),
    # shard 1/2: laser-01 (laser-cutting, laser-marking) available, cam-01 offline
    ((300, 330, 359), "1/2", "photonics", "all", 1, 1, 0, 0, 0),
    ((300, 330, 359), "1/2", "photonics", "laser-cutting", 1, 1, 0, 0, 0),
    ((300, 330, 359), "1/2", "photonics", "laser-marking", 1, 1, 0, 0, 0),
    ((300, 330, 359), "1/2", "imaging", "all", 1, 0, 0, 0, 1),
    ((300, 330, 359), "1/2", "imaging", "optical-inspection", 1, 0, 0, 0, 1),
    # shard 2/2: laser-02 (laser-marking), idle from 300, available from 315 (min_idle 15 min)
    ((300,), "2/2", "photonics", "all", 1, 0, 0, 0, 0),
    ((300,), "2/2", "photonics", "laser-marking", 1, 0, 0, 0, 0),
    ((330, 359), "2/2", "photonics", "all", 1, 1, 0, 0, 0),
    ((330, 359), "2/2", "photonics", "laser-marking", 1, 1, 0, 0, 0),
]


def _at(minute: float) -> int:
    return T0 + int(minute * MIN)


def _day(day: int, hour: int = 0, second: int = 0) -> int:
    return T0 + day * DAY + hour * HOUR + second * 1000


# Daily utilization of the days before the range, from these state changes. Day -10 is
# outside the panels' last 7 days; day -2 was written by one gateway and day -1 by the two
# shards (their zone rows tagged shard), as the gateway writes completed days.
UTIL_CHANGES = [
    ("laser-01", _day(-10), State.DOWN),
    ("laser-01", _day(-2), State.RUNNING),
    ("laser-01", _day(-1, 12), State.IDLE),
    ("laser-01", _day(-1, 18), State.DOWN),
    ("laser-01", _day(-1, 18, 30), State.RUNNING),  # down for 30 s
    ("laser-02", _day(-2), State.MAINTENANCE),
    ("laser-02", _day(-2, 8), State.RUNNING),
    ("cam-01", _day(-1, 6), State.IDLE),  # offline (unknown) before
    ("cam-01", _day(-1, 9), State.RUNNING),
]
UTIL_LAYOUTS = {-10: {"": tuple(HISTORY)}, -2: {"": tuple(HISTORY)}, -1: SHARDS}


def _pct(hours: float, of_hours: float) -> float:
    return 100 * hours / of_hours


HALF_MINUTE = 30 / 3600  # in hours
NOTHING = dict.fromkeys(STATES, 0.0)
# Over days -2 and -1, by hand (hours): what the utilization panels must show, in %.
MACHINE_UTILIZATION = {
    "laser-01": {**NOTHING, "running": _pct(24 + 12 + 6 - HALF_MINUTE, 48),
                 "idle": _pct(6, 48), "down": _pct(HALF_MINUTE, 48)},
    "laser-02": {**NOTHING, "running": _pct(16 + 24, 48), "maintenance": _pct(8, 48)},
    "cam-01": {**NOTHING, "offline": _pct(24 + 6, 48), "idle": _pct(3, 48),
               "running": _pct(15, 48)},
}
# A zone's share is its machines' seconds over its machine-seconds (2 x 48 h in photonics),
# whichever gateway wrote which part.
ZONE_UTILIZATION = {
    "photonics": {**NOTHING, "running": _pct(24 + 12 + 6 - HALF_MINUTE + 16 + 24, 96),
                  "idle": _pct(6, 96), "down": _pct(HALF_MINUTE, 96),
                  "maintenance": _pct(8, 96)},
    "imaging": MACHINE_UTILIZATION["cam-01"],
}

# Forecasts (48 hours each, from the hour after the run): a run an hour before NOW, then one
# at NOW, which rewrites all the hours they share.
PREVIOUS_FORECAST = {m: ([5.0] * 48, [60.0] * 48) for m in HISTORY}
FORECAST = {
    "laser-01": ([45.0] * 12 + [0.0] * 36, [60.0] * 48),
    "laser-02": ([0.0] * 48, [0.0] * 12 + [60.0] * 36),  # offered at night only
    "cam-01": ([12.5] * 48, [60.0] * 48),
}


def _forecast_run(now_ms: int, figures: dict[str, tuple[list[float], list[float]]]) -> Forecasts:
    run = Forecasts(first_hour_ms(now_ms))
    for machine, (expected, offered) in figures.items():
        run.set(machine, tuple(expected), tuple(offered))
    return run


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
    # and still idle at the last periodic report (330 min: idle for 150 min); laser-02
    # available (not offered) from 315, idle since 300.
    for minute, available, idle_for_s in [
        (15, True, 900.0), (60, False, 0.0), (195, True, 900.0), (330, True, 9000.0)
    ]:
        lines += event_lines(SITE, Capacity("laser-01", "photonics", "acme-optics",
                                            _at(minute), available, idle_for_s, available))
    for minute, available, idle_for_s in [(60, False, 0.0), (315, True, 900.0),
                                          (330, True, 1800.0)]:
        # idle and available, but held by a booking from minute 330: not offered
        lines += event_lines(SITE, Capacity("laser-02", "photonics", "lumen-group",
                                            _at(minute), available, idle_for_s, False,
                                            reserved=minute >= 330))
    lines += event_lines(SITE, Capacity("cam-01", "imaging", "visiotech",
                                        _at(330), False, 0.0, False))
    for minutes, shard, zone, capability, *counts in ZONE_REPORTS:
        for minute in minutes:
            reserved = RESERVED.get((shard, zone, capability), 0) if minute >= 330 else 0
            lines += event_lines(
                SITE, ZoneCapacity(zone, capability, _at(minute), *counts, reserved=reserved),
                shard,
            )
    lines += [text for _, text in alert_rows(SITE, [
        AlertTransition("chiller_temp", "laser-02", "photonics", "lumen-group", "critical",
                        True, 31.5, "chiller 31.5 C", _at(125), _at(124)),
        AlertTransition("chiller_temp", "laser-02", "photonics", "lumen-group", "critical",
                        False, 24.0, "chiller back", _at(150), _at(124)),
        AlertTransition("stale_data", "cam-01", "imaging", "visiotech", "warning",
                        True, 61.0, "no data for 61 s", _at(241), _at(240)),
    ])]
    day_changes = [StateChange(m, ZONES[m], ts, state) for m, ts, state in UTIL_CHANGES]
    for day, layout in UTIL_LAYOUTS.items():
        for shard, machines in layout.items():
            report = utilization([c for c in day_changes if c.machine in machines],
                                 _day(day), _day(day + 1),
                                 machines={m: ZONES[m] for m in machines})
            lines += [text for _, text in utilization_rows(SITE, report, _day(day), shard)]
    previous_run = _forecast_run(NOW - HOUR, PREVIOUS_FORECAST)
    lines += [text for _, text in forecast_lines(SITE, ZONES, previous_run)]
    lines += [text for _, text in forecast_lines(SITE, ZONES, _forecast_run(NOW, FORECAST),
                                                 previous_run)]
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

TimeRange = tuple[int, int]


def panel_range(panel: dict[str, Any]) -> TimeRange:
    """The time range Grafana queries a panel over: the dashboard's (RANGE, relative), or
    the panel's own relative time (``timeFrom``), read as Grafana reads it
    (``rangeUtil.describeTextRange``: ``2m`` the last 2 minutes, ``+48h`` the next 48 hours,
    ``now-7d/d`` from the start of the day 7 days ago; the browser here is on UTC)."""
    spec = panel.get("timeFrom")
    assert "timeShift" not in panel, "teach panel_range timeShift"
    if spec is None:
        return RANGE
    if m := re.fullmatch(r"(\d+)([mh])", spec):
        return NOW - int(m[1]) * {"m": MIN, "h": HOUR}[m[2]], NOW
    if m := re.fullmatch(r"\+(\d+)h", spec):
        return NOW, NOW + int(m[1]) * HOUR
    if m := re.fullmatch(r"now-(\d+)d/d", spec):
        start = NOW - int(m[1]) * DAY
        return start - start % DAY, NOW
    raise AssertionError(f"timeFrom {spec!r}: teach panel_range how Grafana reads it")


def substitute(query: str, variables: dict[str, str], time_range: TimeRange = RANGE) -> str:
    start, end = time_range
    text = query.replace("$timeFilter", f"time >= {start}ms and time <= {end}ms")
    text = text.replace("$__interval", "1m")
    for name, value in variables.items():
        text = text.replace(f"${{{name}}}", value).replace(f"${name}", value)
    leftover = re.findall(r"\$\{?[A-Za-z_]\w*", text)
    assert not leftover, f"unsubstituted variable {leftover} in {text}"
    return text


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    def walk(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from walk(panel.get("panels", []))

    yield from walk(dashboard["panels"])


def influx_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str, str, TimeRange]]:
    """(panel title, refId, query, time range) of every InfluxQL target."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("datasource", panel.get("datasource", {})).get("type") == "influxdb":
                assert target.get("rawQuery"), f"{panel['title']}: raw InfluxQL expected"
                yield panel["title"], target["refId"], target["query"], panel_range(panel)


def load(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((DASHBOARDS / name).read_text())
    return result


def query_of(name: str, title: str) -> tuple[str, TimeRange]:
    (found,) = [(q, r) for t, _, q, r in influx_queries(load(name)) if t == title]
    return found


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


def assert_shares(row: Row, expected: dict[str, float]) -> None:
    """Exact to float rounding: the figures are the gateway's, not a sampled estimate."""
    for state in STATES:
        assert abs(row[state] - expected[state]) < 1e-9, (state, row, expected)


# -- expectations, one per panel query -----------------------------------------------------------


def _availability(r: list[Row]) -> None:
    # the shards' latest reports added up; the former layout's (minute 240) left out
    fields = ("machines", "available", "running", "down", "offline", "reserved")
    got = {(x["zone"], x["capability"]): tuple(x[f] for f in fields) for x in r}
    assert got == {
        ("photonics", "all"): (2, 2, 0, 0, 0, 1),
        ("photonics", "laser-cutting"): (1, 1, 0, 0, 0, 0),
        ("photonics", "laser-marking"): (2, 2, 0, 0, 0, 1),
        ("imaging", "all"): (1, 0, 0, 0, 1, 0),
        ("imaging", "optical-inspection"): (1, 0, 0, 0, 1, 0),
    }


def _open_windows(r: list[Row]) -> None:
    got = sorted((x["machine"], x["zone"], x["owner"], x["idle_for_s"], x["available"],
                  x["offered"], x["reserved"], x["time"]) for x in r)
    assert got == [
        ("laser-01", "photonics", "acme-optics", 9000.0, 1, 1, 0, _at(330)),
        ("laser-02", "photonics", "lumen-group", 1800.0, 1, 0, 1, _at(330)),
    ]


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


def _utilization(r: list[Row]) -> None:
    got = by(r, "machine")
    assert set(got) == {(m,) for m in HISTORY}
    for (machine,), row in got.items():
        assert_shares(row, MACHINE_UTILIZATION[machine])


def _zone_utilization(r: list[Row]) -> None:
    got = by(r, "zone")
    assert set(got) == {(z,) for z in ZONE_UTILIZATION}
    for (zone,), row in got.items():
        assert_shares(row, ZONE_UTILIZATION[zone])


def _utilization_detail(r: list[Row]) -> None:
    assert [x["machine"] for x in r] == ["laser-02"]
    assert_shares(r[0], MACHINE_UTILIZATION["laser-02"])


def _available_by_zone(r: list[Row]) -> None:
    # per 1-minute bucket: one gateway, then the two shards' parts added up (330, 359)
    got = {(x["zone"], x["time"]): x["available"] for x in r if x["available"] is not None}
    assert got == {
        **{("photonics", _at(m)): n for m, n in [(200, 1), (240, 1), (300, 1), (330, 2),
                                                  (359, 2)]},
        **{("imaging", _at(m)): 0 for m in (200, 240, 300, 330, 359)},
    }


# the hour starting NOW (from the previous run), then the latest run's 48 hours
FORECAST_HOURS = [NOW + k * HOUR for k in range(49)]


def _forecast(r: list[Row]) -> None:
    got: dict[str, list[tuple[int, float]]] = {}
    for x in r:
        got.setdefault(x["machine"], []).append((x["time"], x["expected_free_min"]))
    assert set(got) == set(FORECAST)
    for machine, (expected, _) in FORECAST.items():
        figures = [PREVIOUS_FORECAST[machine][0][0], *expected]
        assert got[machine] == list(zip(FORECAST_HOURS, figures, strict=True)), machine


def _forecast_detail(r: list[Row]) -> None:
    expected, offered = FORECAST["laser-02"]
    before_expected, before_offered = PREVIOUS_FORECAST["laser-02"]
    assert [(x["time"], x["expected free"], x["offered"]) for x in r] == list(zip(
        FORECAST_HOURS, [before_expected[0], *expected], [before_offered[0], *offered],
        strict=True))


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
    assert {x["idle for"] for x in r} == {0.0, 900.0, 1800.0}


def _available_detail(r: list[Row]) -> None:
    values = {x["available"] for x in r if x["available"] is not None}
    assert values == {0, 1}


def _windows_detail(r: list[Row]) -> None:
    # laser-02 had no idle window: the query must still run; checked on laser-01 below
    assert r == []


def _alerts_detail(r: list[Row]) -> None:
    assert [(x["time"], x["rule"], x["firing"]) for x in r] == [
        (_at(150), "chiller_temp", 0), (_at(125), "chiller_temp", 1)
    ]


Check = Callable[[list[Row]], None]
OVERVIEW = "facility-overview.json"
DETAIL = "machine-detail.json"
EXPECTED: dict[tuple[str, str, str], Check] = {
    (OVERVIEW, "Availability now by zone and capability", "A"): _availability,
    (OVERVIEW, "Open idle windows", "A"): _open_windows,
    (OVERVIEW, "Firing alerts", "A"): _firing,
    (OVERVIEW, "Machine states", "A"): _states,
    (OVERVIEW, "Utilization (share of time per state)", "A"): _utilization,
    (OVERVIEW, "Utilization by zone (share of machine-time per state)", "A"): _zone_utilization,
    (OVERVIEW, "Available machines by zone", "A"): _available_by_zone,
    (OVERVIEW, "Forecast: expected free minutes per machine and hour", "A"): _forecast,
    (OVERVIEW, "Recent idle windows", "A"): _recent_windows,
    (DETAIL, "Telemetry", "A"): _telemetry_detail,
    (DETAIL, "State", "A"): _states_detail,
    (DETAIL, "Utilization", "A"): _utilization_detail,
    (DETAIL, "Idle for and availability", "A"): _idle_for_detail,
    (DETAIL, "Idle for and availability", "B"): _available_detail,
    (DETAIL, "Idle windows", "A"): _windows_detail,
    (DETAIL, "Alerts", "A"): _alerts_detail,
    (DETAIL, "Forecast", "A"): _forecast_detail,
}
# Queries allowed to return nothing for the variables above (and proven non-empty with others).
MAY_BE_EMPTY = {(DETAIL, "Idle windows", "A")}
# The measurements of the time-series contract (README "What it writes").
CONTRACT = {"machine_state", "telemetry", "idle_window", "capacity", "zone_capacity", "alert",
            "utilization", "capacity_forecast"}


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
    for name in (OVERVIEW, DETAIL):
        variables = DETAIL_VARIABLES if name == DETAIL else VARIABLES
        for title, ref, query, time_range in influx_queries(load(name)):
            key = (name, title, ref)
            assert key in EXPECTED, f"no expected rows for {key}: add a check"
            text = substitute(query, variables, time_range)
            result = rows(influx.query(text))
            if key not in MAY_BE_EMPTY:
                assert result, f"{key} returned nothing:\n{text}"
            EXPECTED[key](result)
            seen.add(key)
    assert seen == set(EXPECTED)


def test_machine_detail_windows_for_a_machine_that_had_one(influx: InfluxDB1) -> None:
    query, time_range = query_of(DETAIL, "Idle windows")
    result = rows(influx.query(substitute(query, {**VARIABLES, "machine": "laser-01"},
                                          time_range)))
    assert [(x["time"], x["duration_s"], x["end_ms"], x["offered"]) for x in result] == [
        (_at(0), 3600.0, _at(60), 1)
    ]


def test_utilization_panels_leave_out_the_days_before_their_range(influx: InfluxDB1) -> None:
    # day -10 (laser-01 down all day) is in the store; the panels read the last 7 days
    query, (start, _) = query_of(OVERVIEW, "Utilization (share of time per state)")
    assert start == _day(-7)
    whole = rows(influx.query(substitute(query, VARIABLES, (_day(-10), NOW))))
    assert by(whole, "machine")["laser-01",]["down"] > 30  # the query would count it
    assert_shares(rows(influx.query(substitute(query, VARIABLES, (start, NOW))))[0],
                  MACHINE_UTILIZATION["cam-01"])


def test_template_variables_list_sites_zones_and_machines(influx: InfluxDB1) -> None:
    for name in (OVERVIEW, DETAIL):
        variables = {v["name"]: v for v in load(name)["templating"]["list"]
                     if v["type"] == "query"}
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
    query, time_range = query_of(OVERVIEW, "Machine states")
    imaging = rows(influx.query(substitute(query, {**VARIABLES, "zone": "imaging"},
                                           time_range)))
    assert {r["machine"] for r in imaging} == {"cam-01"}
    other = rows(influx.query(substitute(query, {**VARIABLES, "site": "other-site",
                                                 "machine": r"(x\-01)"}, time_range)))
    assert {r["machine"] for r in other} == {"x-01"}


def test_influxql_panels_read_only_the_contract() -> None:
    for name in (OVERVIEW, DETAIL):
        for title, _, query, _ in influx_queries(load(name)):
            for measurement in re.findall(r'FROM "(\w+)"', query):
                assert measurement in CONTRACT, (name, title, measurement)


def datasource_refs(node: Any) -> Iterator[dict[str, Any]]:
    """Every ``datasource`` reference (panels, targets, template variables) under ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource" and isinstance(value, dict):
                yield value
            else:
                yield from datasource_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from datasource_refs(value)


def test_every_dashboard_takes_its_data_source_from_a_variable() -> None:
    """Imported into a Grafana whose data source has another name and uid, a dashboard
    works once its ``datasource`` variable points at that data source (Grafana picks the
    default one of the type when the variable's saved value does not exist): nothing else
    names a data source."""
    for path in sorted(DASHBOARDS.glob("*.json")):
        dashboard = json.loads(path.read_text())
        variables = dashboard["templating"]["list"]
        source = variables[0]  # first: the other variables query through it
        assert (source["name"], source["type"]) == ("datasource", "datasource"), path.name
        assert [v for v in variables if v["type"] == "datasource"] == [source]
        others = {**dashboard, "templating": {"list": variables[1:]}}
        refs = list(datasource_refs(others))
        assert refs, path.name
        for ref in refs:
            assert ref == {"type": source["query"], "uid": "${datasource}"}, (path.name, ref)
        assert source["current"]["value"] not in json.dumps(others), path.name

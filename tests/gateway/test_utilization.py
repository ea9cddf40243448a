"""Utilization: the pure computation, day boundaries, the state history in the store, the
daily ``utilization`` points and ``/api/utilization``."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from tests.auth import bearer
from tests.fakes import T0, Clock
from tests.sites import UNIT_DEFAULTS, machine_config, site_yaml

from pilotline.gateway.api.app import create_app
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway
from pilotline.gateway.sinks.influx.writer import MemoryWriter
from pilotline.gateway.store import SCHEMA_VERSION, Store
from pilotline.gateway.store.tokens import Role
from pilotline.rules import Sample, State, StateChanged
from pilotline.rules.utilization import (
    STATES,
    StateChange,
    day_start_ms,
    next_day_ms,
    utilization,
)

S = 1000
H = 3_600_000
DAY = 86_400_000

RUN, IDLE, DOWN, MAINT, OFF = (
    State.RUNNING, State.IDLE, State.DOWN, State.MAINTENANCE, State.OFFLINE
)


def ch(machine: str, second: int, state: State, zone: str = "z1") -> StateChange:
    return StateChange(machine, zone, T0 + second * S, state)


def seconds(report_usage: object) -> dict[str, float]:
    return {s.value: report_usage.seconds(s) for s in STATES}  # type: ignore[attr-defined]


# -- the pure function -----------------------------------------------------------------------


def test_time_before_the_first_state_is_offline_and_the_last_state_lasts_to_the_end() -> None:
    report = utilization([ch("m", 10, RUN), ch("m", 40, IDLE)], T0, T0 + 100 * S)
    (m,) = report.machines
    assert seconds(m.usage) == {"running": 30, "idle": 60, "down": 0, "maintenance": 0,
                                "offline": 10}
    assert m.usage.share(IDLE) == 0.6
    assert sum(m.usage.share(s) for s in STATES) == pytest.approx(1.0)


def test_the_state_at_the_start_comes_from_the_last_change_before_it() -> None:
    changes = [ch("m", -500, DOWN), ch("m", -100, MAINT), ch("m", 50, RUN), ch("m", 500, IDLE)]
    report = utilization(changes, T0, T0 + 100 * S)
    assert seconds(report.machines[0].usage)["maintenance"] == 50
    assert seconds(report.machines[0].usage)["running"] == 50
    assert seconds(report.machines[0].usage)["idle"] == 0  # after the period: ignored


def test_the_period_is_clipped_at_now_and_shares_still_add_up() -> None:
    report = utilization([ch("m", 0, IDLE)], T0, T0 + 100 * S, now_ms=T0 + 25 * S)
    assert report.until_ms == T0 + 25 * S
    assert report.machines[0].usage.period_ms == 25 * S
    assert report.machines[0].usage.share(IDLE) == 1.0
    future = utilization([], T0, T0 + S, now_ms=T0 - S)
    assert future.machines == ()
    empty = utilization([], T0, T0 + S, now_ms=T0 - S, machines={"m": "z1"})
    assert empty.machines[0].usage.share(OFF) == 0.0  # nothing elapsed: no share at all


def test_zones_sum_their_machines_and_silent_machines_are_offline() -> None:
    changes = [ch("a", 0, RUN), ch("b", 0, IDLE), ch("b", 50, DOWN), ch("c", 0, IDLE, zone="z2")]
    report = utilization(changes, T0, T0 + 100 * S, machines={"a": "z1", "b": "z1", "d": "z1"})
    assert [(m.zone, m.machine) for m in report.machines] == [
        ("z1", "a"), ("z1", "b"), ("z1", "d"), ("z2", "c")
    ]
    z1, z2 = report.zones
    assert (z1.zone, z1.machines, z1.usage.period_ms) == ("z1", 3, 300 * S)
    assert seconds(z1.usage) == {"running": 100, "idle": 50, "down": 50, "maintenance": 0,
                                 "offline": 100}
    assert z1.usage.share(OFF) == pytest.approx(1 / 3)
    assert (z2.zone, z2.machines, z2.usage.share(IDLE)) == ("z2", 1, 1.0)


def test_changes_in_any_order_and_at_the_same_time() -> None:
    changes = [ch("m", 60, OFF), ch("m", 0, RUN), ch("m", 60, IDLE)]  # same ms: the later one wins
    report = utilization(changes, T0, T0 + 100 * S)
    assert seconds(report.machines[0].usage)["running"] == 60
    assert seconds(report.machines[0].usage)["idle"] == 40


def test_a_period_ending_before_it_starts_is_refused() -> None:
    with pytest.raises(ValueError, match="ends before"):
        utilization([], T0, T0 - 1)


def test_days_in_a_time_zone_across_daylight_saving_changes() -> None:
    assert day_start_ms(T0 + 5 * H) == T0
    assert next_day_ms(T0) == T0 + DAY
    paris = ZoneInfo("Europe/Paris")
    spring = day_start_ms(1_774_778_400_000, paris)  # 2026-03-29 12:00+02:00
    assert next_day_ms(spring, paris) - spring == 23 * H
    autumn = day_start_ms(1_792_918_800_000, paris)  # 2026-10-25 12:00+01:00
    assert next_day_ms(autumn, paris) - autumn == 25 * H


# -- the store -------------------------------------------------------------------------------


def changed(machine: str, ts_ms: int, state: State) -> StateChanged:
    return StateChanged(machine, "z1", "acme", state, State.OFFLINE, ts_ms)


def test_state_changes_are_kept_as_history_and_replays_are_idempotent(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        events = [changed("m", T0, RUN), changed("m", T0 + S, IDLE), changed("n", T0 + 2 * S, DOWN)]
        store.commit(now_ms=T0, events=events)
        store.commit(now_ms=T0, events=events)  # the same events again
        rows = store.state_history(T0 - DAY, T0 + DAY)
        assert [(r["machine"], r["ts_ms"], r["state"]) for r in rows] == [
            ("m", T0, "running"), ("m", T0 + S, "idle"), ("n", T0 + 2 * S, "down")
        ]
        # from inside the period: the change that gives each machine's state at the start
        rows = store.state_history(T0 + 1500, T0 + DAY)
        assert [(r["machine"], r["ts_ms"]) for r in rows] == [("m", T0 + S), ("n", T0 + 2 * S)]
        assert store.first_state_ms() == T0


def test_an_older_store_file_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.executescript("DROP TABLE state_history; DROP TABLE reports; "
                     "UPDATE schema_version SET version = 1;")
    db.close()
    with Store(path) as store:
        store.commit(now_ms=T0, events=[changed("m", T0, RUN)])
        assert len(store.state_history(T0, T0 + 1)) == 1
    db = sqlite3.connect(path)
    assert db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


# -- the gateway: daily points and the API ---------------------------------------------------

def site(tmp_path: Path, **keys: str) -> str:
    """The site of laser-01 and cam-02; ``keys`` are more of its top-level keys."""
    return site_yaml(
        {"photonics": [machine_config("laser-01"), machine_config("cam-02", "lumen")]},
        store=tmp_path / "gw.db",
        defaults={**UNIT_DEFAULTS, "stale_after_s": 7200, "publish_interval_s": 3600},
        **keys,
    )


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    path = tmp_path / "site.yaml"
    path.write_text(site(tmp_path))
    clock = Clock()
    gw = Gateway(load_config(path), writer=MemoryWriter(), clock_ms=clock)
    # laser-01: running 0-6 h, idle 6-24 h, running the next day; cam-02: never heard of
    for hour in range(31):
        state = "NotExecuting" if 6 <= hour < 24 else "Executing"
        clock.ms = T0 + hour * H
        gw.ingest.sample(Sample("laser-01", clock.ms, {"state": state}), None)
        gw.ingest.advance(clock.ms)
    gw.commit()
    return gw


def utilization_lines(gateway: Gateway) -> list[str]:
    return [line for _, line in gateway.store.outbox_peek(10_000)
            if line.startswith("utilization,")]


def test_each_completed_day_is_written_once(gateway: Gateway) -> None:
    clock: Clock = gateway.clock_ms  # type: ignore[assignment]
    clock.ms = T0 + DAY + 1000  # the day just ended, but its late events may still come
    assert gateway.report_utilization() == []
    clock.ms = T0 + DAY + gateway.settle_ms
    assert gateway.report_utilization() == [T0]
    assert gateway.report_utilization() == []  # done: never twice
    lines = utilization_lines(gateway)
    assert len(lines) == 3  # two machines and their zone
    laser = next(line for line in lines if "machine=laser-01" in line)
    assert laser.startswith("utilization,machine=laser-01,site=unit,zone=photonics ")
    assert "running=0.25,idle=0.75,down=0,maintenance=0,offline=0," in laser
    assert "running_s=21600,idle_s=64800," in laser
    assert laser.endswith(f" {T0 * 1_000_000}")
    zone = next(line for line in lines if "machine=" not in line)
    assert "offline=0.5," in zone  # cam-02 sent nothing: offline all day
    assert "machines=2i" in zone


def test_a_restarted_gateway_backfills_missing_days(gateway: Gateway, tmp_path: Path) -> None:
    clock: Clock = gateway.clock_ms  # type: ignore[assignment]
    clock.ms = T0 + 3 * DAY + gateway.settle_ms
    assert gateway.report_utilization() == [T0, T0 + DAY, T0 + 2 * DAY]
    gateway.store.close()  # the first gateway has stopped: its lock on the store is let go
    restarted = Gateway(gateway.config, writer=MemoryWriter(), clock_ms=clock)
    clock.ms += DAY
    assert restarted.report_utilization() == [T0 + 3 * DAY]


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
        yield c


async def test_the_api_answers_per_machine_and_zone(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    clock: Clock = gateway.clock_ms  # type: ignore[assignment]
    clock.ms = T0 + 30 * H
    operator = bearer(gateway.store, Role.OPERATOR)
    body = (await client.get("/api/utilization", params={"from": T0, "to": T0 + DAY},
                             headers=operator)).json()
    assert body["from"] == "2026-11-27T00:00:00.000+00:00"
    assert body["until"] == "2026-11-28T00:00:00.000+00:00"
    laser = next(m for m in body["machines"] if m["machine"] == "laser-01")
    assert laser["shares"] == {"running": 0.25, "idle": 0.75, "down": 0.0,
                               "maintenance": 0.0, "offline": 0.0}
    assert laser["seconds"]["idle"] == 64_800
    assert body["zones"][0]["machines"] == 2
    # default: the last 24 h, up to now
    body = (await client.get("/api/utilization", headers=operator)).json()
    assert body["to"] == "2026-11-28T06:00:00.000+00:00"
    laser = next(m for m in body["machines"] if m["machine"] == "laser-01")
    assert laser["seconds"]["running"] == 6 * 3600  # running since 24 h
    # an owner sees its own machines, and its zone figures are made of them only
    owner = bearer(gateway.store, Role.OWNER, "lumen")
    body = (await client.get("/api/utilization", headers=owner)).json()
    assert [m["machine"] for m in body["machines"]] == ["cam-02"]
    assert body["zones"][0]["machines"] == 1
    for params in ({"from": T0, "to": T0 - 1}, {"from": T0, "to": T0 + 400 * DAY},
                   {"from": "yesterday"}):
        answer = await client.get("/api/utilization", params=params, headers=operator)
        assert answer.status_code == 422, params


def test_days_are_the_sites_local_days(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(site(tmp_path, timezone="Europe/Paris"))
    clock = Clock()
    gw = Gateway(load_config(path), writer=MemoryWriter(), clock_ms=clock)
    gw.ingest.sample(Sample("laser-01", T0, {"state": "Executing"}), None)
    clock.ms = T0 + DAY + gw.settle_ms
    # Paris is UTC+1 in November: the local day of T0 began at 23:00 UTC the day before
    assert gw.report_utilization() == [T0 - H]
    clock.ms = T0 + 47 * H + gw.settle_ms
    assert gw.report_utilization() == [T0 + 23 * H]

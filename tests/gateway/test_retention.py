"""The store's retention (``store_retention:``): rows past their age go from a real store
file, in batches; what is still needed stays, whatever its age."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from tests.fakes import T0, Clock
from tests.sites import UNIT_DEFAULTS, load_text, machine_config, refused, site_yaml

from pilotline.gateway.config import load_config
from pilotline.gateway.config.retention import StoreRetention
from pilotline.gateway.service import Gateway, pruning
from pilotline.gateway.service.pruning import Pruner
from pilotline.gateway.sinks.influx.writer import MemoryWriter
from pilotline.gateway.store import QuarantineRow, Store
from pilotline.rules import State, StateChanged
from pilotline.rules.events import IdleWindowClosed, IdleWindowOpened

DAY = 86_400_000
NOW = T0
RETENTION = {"history_days": 40, "quarantine_days": 7, "dead_letter_days": 10}


def ago(days: float) -> int:
    return NOW - round(days * DAY)


def changed(machine: str, ts_ms: int, state: State) -> StateChanged:
    return StateChanged(machine, "z1", "acme", state, State.OFFLINE, ts_ms)


def closed(machine: str, start_ms: int, end_ms: int) -> IdleWindowClosed:
    return IdleWindowClosed(machine, "z1", start_ms, end_ms, offered=True)


def site(tmp_path: Path, **retention: Any) -> str:
    machines = [machine_config(m) for m in ("m1", "m2", "m3")]
    return site_yaml(
        {"z1": machines},
        store=tmp_path / "gw.db",
        defaults={**UNIT_DEFAULTS, "stale_after_s": 7200},
        **({"store_retention": retention} if retention else {}),
    )


def fill(store: Store) -> None:
    """Rows of every history table, on both sides of the cutoffs of ``RETENTION``, and rows
    that must stay however old they are."""
    store.commit(
        now_ms=ago(300),
        events=[
            # m1: a history reaching back 100 days; m2: one change, 300 days ago
            changed("m1", ago(100), State.RUNNING),
            changed("m1", ago(90), State.IDLE),
            changed("m1", ago(50), State.RUNNING),  # the state m1 is in at the cutoff
            changed("m1", ago(2), State.IDLE),
            changed("m2", ago(300), State.DOWN),  # m2's latest state: kept
            # windows: closed long ago (go), open for 200 days (kept), across the cutoff
            closed("m1", ago(90), ago(50)),
            IdleWindowOpened("m3", "z1", ago(200)),
            closed("m2", ago(45), ago(38)),
            closed("m1", ago(2), ago(1)),
        ],
        notifications=[("ops", '{"old": "unsent"}')],  # an unsent notification: kept
        quarantined=[
            QuarantineRow(ago(8), "mqtt", "t", "m1", "malformed_json", b"{old"),
            QuarantineRow(ago(6), "mqtt", "t", "m1", "malformed_json", b"{recent"),
        ],
    )
    alerts = store.alert_state()
    alerts.record_ack("stale", "m1", "ops", ago(41), "old")
    alerts.record_ack("stale", "m1", "ops", ago(39), "recent")
    for day in (45, 44, 43):  # reports written up to 43 days ago
        store.commit_report("utilization", ago(day), lines=[], now_ms=ago(day), outbox=False)
    store.commit(now_ms=ago(11), lines=[(1, "refused value=1i 1")])
    store.commit(now_ms=ago(9), lines=[(1, "refused value=2i 1")])
    upto = store.outbox_peek(10)[-1][0]
    store.outbox_dead_letter(upto - 1, now_ms=ago(11), status=400, error="old")
    store.outbox_dead_letter(upto, now_ms=ago(9), status=400, error="recent")
    # an unsent line, 300 days old: kept
    store.commit(now_ms=ago(300), lines=[(1, "old_unsent value=1i 1")])


def table(store: Store, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(row.values()) for row in store._rows(sql)]


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    path = tmp_path / "site.yaml"
    path.write_text(site(tmp_path, **RETENTION))
    gw = Gateway(load_config(path), writer=MemoryWriter(), clock_ms=Clock(NOW))
    fill(gw.store)
    return gw


async def test_rows_past_their_age_go_and_what_is_still_needed_stays(gateway: Gateway) -> None:
    store = gateway.store
    usage_before = gateway.utilization(ago(40), NOW)
    with capture_logs() as logs:
        pruned = await gateway.pruner.prune()
    assert pruned == {
        "state_history": 2,
        "idle_windows": 1,
        "alert_acks": 1,
        "reports": 2,
        "quarantine": 1,
        "dead_letter": 1,
    }
    assert next(e for e in logs if e["event"] == "store.pruned")["rows"] == pruned

    assert table(store, "SELECT machine, ts_ms FROM state_history ORDER BY machine, ts_ms") == [
        ("m1", ago(50)), ("m1", ago(2)), ("m2", ago(300))
    ]
    assert table(store, "SELECT machine, start_ms, end_ms FROM idle_windows ORDER BY start_ms") == [
        ("m3", ago(200), None), ("m2", ago(45), ago(38)), ("m1", ago(2), ago(1))
    ]
    assert table(store, "SELECT comment FROM alert_acks") == [("recent",)]
    assert table(store, "SELECT period_ms FROM reports") == [(ago(43),)]
    assert table(store, "SELECT head FROM quarantine") == [(b"{recent",)]
    assert table(store, "SELECT error FROM dead_letter") == [("recent",)]
    # never pruned: the unsent outbox line, the unsent notification, the current states
    assert [line for _, line in store.outbox_peek(10)] == ["old_unsent value=1i 1"]
    assert store.notifications_waiting("ops") == 1
    assert {m["machine"]: m["state"] for m in store.machines()} == {
        "m1": "idle", "m2": "down"
    }
    # utilization from the cutoff on is what it was: the state at the start was kept
    assert gateway.utilization(ago(40), NOW) == usage_before
    assert store.last_report("utilization") == ago(43)

    assert await gateway.pruner.prune() == {}  # nothing more to do


async def test_null_keeps_a_group_forever(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(site(tmp_path, history_days=None, quarantine_days=None,
                         dead_letter_days=None))
    gw = Gateway(load_config(path), writer=MemoryWriter(), clock_ms=Clock(NOW))
    fill(gw.store)
    assert gw.pruner.cutoffs() == {}
    assert await gw.pruner.prune() == {}
    assert len(gw.store.state_history(ago(400), NOW)) == 5


async def test_the_history_an_unwritten_report_needs_stays(tmp_path: Path) -> None:
    """The state history's cutoff goes back to the first day whose report is not written,
    even when that is older than ``history_days``."""
    with Store(tmp_path / "s.db") as store:
        fill(store)
        pruner = Pruner(
            retention=StoreRetention(**RETENTION), store=store, clock_ms=Clock(NOW),
            needed_from=lambda: ago(95),
        )
        assert pruner.cutoffs()["state_history"] == ago(95)
        assert pruner.cutoffs()["idle_windows"] == ago(40)
        await pruner.prune()
        assert table(store, "SELECT ts_ms FROM state_history WHERE machine = 'm1'") == [
            (ago(100),), (ago(90),), (ago(50),), (ago(2),)
        ]  # 100 days ago: m1's state at 95 days ago, the start of the unwritten day


async def test_a_large_backlog_goes_in_batches_with_the_event_loop_free(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        old = [changed("m1", ago(500) + i, State.RUNNING if i % 2 else State.IDLE)
               for i in range(1_201)]
        store.commit(now_ms=ago(500), events=old)
        pruner = Pruner(retention=StoreRetention(), store=store, clock_ms=Clock(NOW),
                        needed_from=lambda: None, batch=100)
        turns = 0

        async def other_work() -> None:
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(other_work())
        await asyncio.sleep(0)
        turns = 0
        with capture_logs():
            pruned = await pruner.prune()
        task.cancel()
        assert pruned == {"state_history": 1_200}  # the last one is m1's latest state
        assert turns >= 12  # between every two batches of 100


async def test_the_gateway_prunes_by_itself(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pruning, "PRUNE_FIRST_S", 0.0)
    task = asyncio.create_task(gateway.pruner.run(), name="store-pruner")
    try:
        for _ in range(200):
            if gateway.store.quarantine_count() == 1:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert gateway.store.quarantine_count() == 1
    assert len(gateway.store.state_history(ago(400), NOW)) == 3


async def test_a_failed_run_is_logged_and_the_gateway_carries_on(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pruning, "PRUNE_FIRST_S", 0.0)
    monkeypatch.setattr(pruning, "PRUNE_INTERVAL_S", 0.01)
    calls = 0

    def locked(*_args: object) -> int:
        nonlocal calls
        calls += 1
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(gateway.store.retention, "prune", locked)
    with capture_logs() as logs:
        task = asyncio.create_task(gateway.pruner.run())
        for _ in range(200):
            if calls >= 2:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert calls >= 2  # tried again at the next run
    failed = [e for e in logs if e["event"] == "store.prune_failed"]
    assert failed
    assert failed[0]["error"] == "database is locked"


# -- the configuration ------------------------------------------------------------------------


def test_the_defaults_keep_a_year_of_history_and_a_month_of_rejected_input(
    tmp_path: Path,
) -> None:
    config = load_text(tmp_path, site(tmp_path))
    assert config.store_retention == StoreRetention(
        history_days=400, quarantine_days=30, dead_letter_days=90
    )
    config = load_text(tmp_path, site(tmp_path, history_days=None, quarantine_days=3))
    assert config.store_retention.history_days is None
    assert config.store_retention.quarantine_days == 3


@pytest.mark.parametrize(
    ("retention", "path", "message"),
    [
        ({"history_days": 30}, "store_retention.history_days", "keep at least 35 days"),
        ({"quarantine_days": 0}, "store_retention.quarantine_days", "greater than or equal"),
        ({"dead_letter_days": True}, "store_retention.dead_letter_days", "expected a number"),
        ({"history_days": 40.5}, "store_retention.history_days", "fractional"),
        ({"keep_days": 3}, "store_retention.keep_days", "unknown key"),
    ],
)
def test_a_wrong_retention_is_refused_with_its_path(
    tmp_path: Path, retention: dict[str, Any], path: str, message: str
) -> None:
    (issue,) = refused(tmp_path, site(tmp_path, **retention))
    assert issue.path == path
    assert message in issue.message
    assert issue.line is not None

"""Store + OutboxDrainer + InfluxClientWriter against a real victoria-metrics.

victoria-metrics speaks InfluxDB line protocol on /api/v2/write and exports a field ``f`` of
measurement ``m`` as the series ``m_f`` (string fields are not kept; the embedded store and
the unit tests cover them).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from pilotline.gateway.sinks.influx.drain import OutboxDrainer
from pilotline.gateway.sinks.influx.points import PRIORITY_TELEMETRY, event_rows, telemetry_line
from pilotline.gateway.sinks.influx.writer import InfluxClientWriter, WriteError
from pilotline.gateway.store import Store
from pilotline.rules.events import (
    Capacity,
    Event,
    IdleWindowClosed,
    IdleWindowOpened,
    StateChanged,
    ZoneCapacity,
)
from pilotline.rules.states import State

try:
    from tests.peers import VictoriaMetrics
except ImportError:  # the repository root is not on sys.path (no rootdir conftest)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.peers import VictoriaMetrics

pytestmark = pytest.mark.integration

SITE = "marseille-pilot"


def past_ms(seconds: float = 3600) -> int:
    """Event time a while ago: victoria-metrics exports a point stamped 'now' a bit later."""
    return int(time.time() * 1000 - seconds * 1000)


def series(exported: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["metric"]["__name__"]: s for s in exported}


async def test_contract_points_round_trip(tmp_path: Path, vm: VictoriaMetrics) -> None:
    t0 = past_ms()
    end = t0 + 1_200_000
    events: list[Event] = [
        StateChanged("laser-01", "photonics", "acme-optics", State.IDLE, State.RUNNING, t0),
        IdleWindowOpened("laser-01", "photonics", t0),
        IdleWindowClosed("laser-01", "photonics", t0, end, offered=True),
        Capacity(
            "laser-01",
            "photonics",
            "acme-optics",
            t0 + 900_000,
            available=True,
            idle_for_s=900.0,
            offered=True,
        ),
        ZoneCapacity("photonics", "laser-cutting", t0 + 60_000, 3, 1, 1, 0, 1),
    ]
    telemetry = telemetry_line(
        SITE, "photonics", "laser-01", {"power_w": 812.5, "state": "Executing"}, t0 + 5
    )
    assert telemetry is not None
    store = Store(tmp_path / "store.db")
    store.commit(
        now_ms=int(time.time() * 1000),
        lines=[*event_rows(SITE, events), (PRIORITY_TELEMETRY, telemetry)],
        events=events,
    )
    writer = InfluxClientWriter(vm.url, "pilot", "pilotline", token=None)
    try:
        drainer = OutboxDrainer(store, writer)
        assert await drainer.flush(timeout_s=10)
    finally:
        writer.close()
    assert drainer.stats().written == 5
    assert store.outbox_depth() == 0

    got = series(
        vm.export('{__name__=~"(machine_state|idle_window|capacity|zone_capacity|telemetry)_.+"}')
    )
    machine = {"site": SITE, "zone": "photonics", "machine": "laser-01"}
    owned = {**machine, "owner": "acme-optics"}
    expected = {
        "machine_state_state_code": (owned, 2, t0),
        "idle_window_duration_s": (machine, 1200, t0),
        "idle_window_end_ms": (machine, end, t0),
        "idle_window_offered": (machine, 1, t0),
        "capacity_available": (owned, 1, t0 + 900_000),
        "capacity_idle_for_s": (owned, 900, t0 + 900_000),
        "capacity_offered": (owned, 1, t0 + 900_000),
        "telemetry_power_w": (machine, 812.5, t0 + 5),
    }
    for name, (labels, value, ts) in expected.items():
        assert name in got, f"{name} missing from {sorted(got)}"
        metric = dict(got[name]["metric"])
        del metric["__name__"]
        assert metric == labels, name
        assert got[name]["values"] == [value], name
        assert got[name]["timestamps"] == [ts], name
    zone_labels = {"site": SITE, "zone": "photonics", "capability": "laser-cutting"}
    for field, value in {
        "machines": 3,
        "available": 1,
        "running": 1,
        "down": 0,
        "offline": 1,
    }.items():
        s = got[f"zone_capacity_{field}"]
        assert {k: v for k, v in s["metric"].items() if k != "__name__"} == zone_labels
        assert (s["values"], s["timestamps"]) == ([value], [t0 + 60_000])
    assert "telemetry_state" not in got  # enumerated values are states, not telemetry
    # string fields: victoria-metrics drops them, the embedded store keeps them
    assert store.machines()[0]["state"] == "idle"
    store.close()


class GatedWriter:
    """The real writer, with a lock the test can hold to keep a write from being in flight,
    and a switch to lose the answer of one successful write (as a timeout or a kill of the
    gateway right after the server stored it would)."""

    def __init__(self, inner: InfluxClientWriter) -> None:
        self.inner = inner
        self.lock = threading.Lock()
        self.lose_next_ack = False

    def write(self, lines: Sequence[str]) -> None:
        with self.lock:
            self.inner.write(lines)
            if self.lose_next_ack:
                self.lose_next_ack = False
                raise WriteError("answer lost", retryable=True)

    def close(self) -> None:
        self.inner.close()


async def test_a_killed_store_costs_delay_never_data(tmp_path: Path, vm: VictoriaMetrics) -> None:
    store = Store(tmp_path / "store.db")
    writer = GatedWriter(InfluxClientWriter(vm.url, "pilot", "pilotline", None, timeout_s=2))
    drainer = OutboxDrainer(
        store,
        writer,
        batch_size=50,
        flush_interval_s=0.05,
        backoff_base_s=0.05,
        backoff_cap_s=0.2,
    )
    t0 = past_ms()
    committed: list[int] = []
    stop = asyncio.Event()

    async def commit_forever() -> None:
        seq = 0
        while not stop.is_set():
            ts = t0 + seq
            text = telemetry_line(SITE, "photonics", "cam-02", {"seq": float(seq)}, ts)
            assert text is not None
            store.commit(now_ms=int(time.time() * 1000), lines=[(PRIORITY_TELEMETRY, text)])
            drainer.notify()
            committed.append(ts)
            seq += 1
            await asyncio.sleep(0.002)

    with capture_logs() as logs:
        committer = asyncio.create_task(commit_forever(), name="committer")
        draining = asyncio.create_task(drainer.run(), name="drain")
        await asyncio.sleep(0.3)
        assert drainer.stats().written > 0

        # Kill the store between two writes. victoria-metrics keeps its last seconds in
        # memory (InfluxDB has a WAL): persist() first, so the kill loses nothing it acked.
        with writer.lock:
            vm.persist()
            vm.stop(kill=True)
        await asyncio.sleep(1.0)  # points keep being committed; writes fail
        down = drainer.stats()
        assert down.retries >= 2
        assert down.depth > 0
        assert down.last_error is not None

        writer.lose_next_ack = True  # the first write after the restart is sent twice
        vm.start()
        await asyncio.sleep(0.3)
        stop.set()
        await committer
        assert await drainer.flush(timeout_s=10)
        draining.cancel()
        with pytest.raises(asyncio.CancelledError):
            await draining
    writer.close()

    assert len(committed) > 200
    exported = vm.export("telemetry_seq")
    assert len(exported) == 1
    timestamps = exported[0]["timestamps"]
    assert sorted(timestamps) == committed  # every point, exactly once
    assert sorted(exported[0]["values"]) == [float(ts - t0) for ts in committed]
    stats = drainer.stats()
    assert stats.healthy
    assert stats.depth == 0
    assert stats.written >= len(committed)  # the batch whose answer was lost counts twice
    events = [e["event"] for e in logs]
    assert "influx.write_failed" in events
    assert "influx.recovered" in events
    store.close()


async def test_a_restarted_gateway_sends_what_it_had_queued(
    tmp_path: Path, vm: VictoriaMetrics
) -> None:
    path = tmp_path / "store.db"
    vm.stop()
    t0 = past_ms()
    store = Store(path)
    lines = [
        telemetry_line(SITE, "photonics", "cam-02", {"n": float(i)}, t0 + i) for i in range(300)
    ]
    store.commit(
        now_ms=int(time.time() * 1000), lines=[(PRIORITY_TELEMETRY, text) for text in lines if text]
    )
    writer = InfluxClientWriter(vm.url, "pilot", "pilotline", None, timeout_s=1)
    drainer = OutboxDrainer(store, writer, batch_size=100, backoff_base_s=0.01, backoff_cap_s=0.05)
    with capture_logs():
        assert not await drainer.flush(timeout_s=0.3)  # the store is down
    store.close()  # the gateway stops (or is killed) with 300 lines queued

    vm.start()
    reopened = Store(path)
    assert reopened.outbox_depth() == 300
    drainer = OutboxDrainer(reopened, writer, batch_size=100)
    assert await drainer.flush(timeout_s=10)
    writer.close()
    exported = vm.export("telemetry_n")
    assert sorted(exported[0]["timestamps"]) == [t0 + i for i in range(300)]
    reopened.close()

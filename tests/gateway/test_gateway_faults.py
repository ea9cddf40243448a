"""The gateway shell's defined outcomes for restarts and odd input, without any network:
resume from the store, duplicates, out-of-order, future samples and wall clock steps.

The collector callbacks are called directly, as the event loop would; ``tick()`` is one turn
of the rules timer; the wall and monotonic clocks are injected.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.fakes import T0, Clock
from tests.sites import UNIT_DEFAULTS, machine_config, site_yaml

from pilotline.collectors.mqtt.collector import AckToken
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway
from pilotline.gateway.sinks.influx.writer import MemoryWriter
from pilotline.rules import Sample, State

HOUR = 3_600_000


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(
        site_yaml(
            {"photonics": [machine_config("laser-01"), machine_config("laser-02")]},
            store=tmp_path / "gw.db",
            defaults={**UNIT_DEFAULTS, "min_idle_s": 10, "publish_interval_s": 600},
        )
    )
    return path


def start(path: Path, clocks: Clock) -> Gateway:
    gateway = Gateway(
        load_config(path),
        writer=MemoryWriter(),
        clock_ms=clocks,
        monotonic_ms=clocks.monotonic,
    )
    gateway.caught_up = True  # no broker here: no backlog to wait for
    return gateway


_delivery = iter(range(1, 1_000_000))


def mqtt(gateway: Gateway, machine: str, ts: int, state: str = "NotExecuting") -> None:
    n = next(_delivery)
    values = {"state": state, "power_w": 40.0}
    gateway.ingest.sample(Sample(machine, ts, values), AckToken(1, n, n))


def rows(gateway: Gateway, table: str) -> list[dict[str, object]]:
    return gateway.store._rows(f"SELECT * FROM {table} ORDER BY 1, 2")  # nosec B608


def telemetry_lines(gateway: Gateway) -> list[str]:
    return [line for _, line in gateway.store.outbox_peek(10_000) if line.startswith("telemetry")]


def test_a_restarted_gateway_resumes_states_and_open_windows(config_path: Path) -> None:
    clocks = Clock()
    first = start(config_path, clocks)
    mqtt(first, "laser-02", T0, "Executing")
    for s in range(0, 30, 5):
        clocks.set(T0 + s * 1000)
        mqtt(first, "laser-01", T0 + s * 1000)
        first.commit()
    first.store.close()  # killed: nothing else runs

    clocks.advance(20_000)  # back 20 s later, less than stale_after
    second = start(config_path, clocks)
    assert second.resumed == 2
    views = {v.id: v for v in second.plant.view()}
    assert views["laser-01"].state is State.IDLE
    assert views["laser-01"].window_start_ms == T0
    assert views["laser-02"].state is State.RUNNING
    for s in range(45, 60, 5):
        clocks.set(T0 + s * 1000)
        mqtt(second, "laser-01", T0 + s * 1000)
        second.tick()
        second.commit()
    assert second.metrics.events["StateChanged"] == 0
    assert second.metrics.events["IdleWindowOpened"] == 0
    # laser-02 said nothing since T0. A restart cannot tell a dead machine from a broker
    # backlog still on its way: its silence counts again from the restart (T0 + 43 s on
    # the core's clock), and it is never offered meanwhile
    clocks.set(T0 + 70_000)
    second.tick()
    second.commit()
    assert {r["machine"]: r["state"] for r in rows(second, "machines")}["laser-02"] == "running"
    clocks.set(T0 + 106_000)  # 60 s of silence since the restart, past the watermark
    second.tick()
    second.commit()
    machines = {r["machine"]: r for r in rows(second, "machines")}
    assert machines["laser-02"]["state"] == "offline"
    assert machines["laser-02"]["since_ms"] == T0
    assert machines["laser-01"]["state"] == "idle"
    assert machines["laser-01"]["since_ms"] == T0
    # silent from now on: the one window closes once, with its original start
    clocks.set(T0 + 200_000)
    second.tick()
    second.commit()
    windows = rows(second, "idle_windows")
    assert [(w["machine"], w["start_ms"], w["end_ms"]) for w in windows] == [
        ("laser-01", T0, T0 + 55_000)
    ]


def test_a_store_of_an_older_version_closes_a_dangling_window(config_path: Path) -> None:
    clocks = Clock()
    first = start(config_path, clocks)
    mqtt(first, "laser-01", T0)
    first.commit()
    first.store._db.execute("DELETE FROM resume")  # as written before schema version 4
    first.store._db.execute("DELETE FROM resume_log")
    first.store.close()
    clocks.advance(HOUR)
    second = start(config_path, clocks)
    second.tick()
    clocks.advance(63_000)  # stale_after (60 s) since the restart, past the watermark
    second.tick()
    second.commit()
    windows = rows(second, "idle_windows")
    assert [(w["start_ms"], w["end_ms"]) for w in windows] == [(T0, T0)]
    assert {r["machine"]: r["state"] for r in rows(second, "machines")} == {"laser-01": "offline"}


def test_a_redelivered_message_is_a_counted_duplicate_not_an_event(config_path: Path) -> None:
    clocks = Clock(T0 + 5_000)
    first = start(config_path, clocks)
    for s in range(5):
        mqtt(first, "laser-01", T0 + s * 1000)
    first.commit()
    first.store.close()
    second = start(config_path, clocks)
    before = len(telemetry_lines(second))
    for s in range(5):  # the broker delivers them again (committed, not acknowledged)
        mqtt(second, "laser-01", T0 + s * 1000)
    second.commit()
    assert second.metrics.rejected[("rules", "duplicate")] == 4  # the last one: same time
    assert second.metrics.events["StateChanged"] == 0
    assert second.store.quarantine_count() == 0  # not bad input
    assert len(telemetry_lines(second)) == before + 5  # rewritten: the same points again


def test_an_out_of_order_sample_is_quarantined_but_its_telemetry_kept(config_path: Path) -> None:
    clocks = Clock(T0 + 10_000)
    gateway = start(config_path, clocks)
    mqtt(gateway, "laser-01", T0 + 10_000)
    mqtt(gateway, "laser-01", T0 + 5_000, "Executing")
    gateway.commit()
    assert gateway.metrics.rejected[("rules", "out_of_order")] == 1
    assert [q["reason"] for q in gateway.store.quarantine()] == ["out_of_order"]
    assert len(telemetry_lines(gateway)) == 2  # a true measurement at its own time
    assert {v.id: v.state for v in gateway.plant.view()}["laser-01"] is State.IDLE


def test_future_limit_is_the_machines_max_skew(config_path: Path) -> None:
    clocks = Clock()
    gateway = start(config_path, clocks)
    limit = 2_000  # defaults.max_skew_s
    mqtt(gateway, "laser-01", T0 + limit)  # at the limit: accepted
    mqtt(gateway, "laser-02", T0 + limit + 1)  # beyond: refused
    gateway.commit()
    assert gateway.metrics.rejected[("rules", "future")] == 1
    assert [q["machine"] for q in gateway.store.quarantine()] == ["laser-02"]
    assert gateway.metrics.future == {"laser-02": 1}
    assert gateway.metrics.ahead["laser-02"] == (limit + 1, T0)
    # its later honest samples count: the refused stamp moved no clock
    mqtt(gateway, "laser-02", T0 + 500)
    gateway.commit()
    assert gateway.metrics.rejected[("rules", "out_of_order")] == 0
    assert gateway.metrics.samples["laser-02"] == 1


def stream(gateway: Gateway, clocks: Clock, seconds: range, *, source_offset: int = 0) -> None:
    """Both machines report every second; ticks in between, as the timer would."""
    for s in seconds:
        clocks.mono = s * 1000
        clocks.ms = clocks.ms  # as set by the test (it may have stepped)
        for machine in ("laser-01", "laser-02"):
            mqtt(gateway, machine, T0 + s * 1000 + source_offset)
        gateway.tick()
        gateway.commit()
        clocks.ms += 1000


@pytest.mark.parametrize("step_ms", [HOUR, -HOUR], ids=["forward-hour", "backward-hour"])
def test_a_wall_clock_step_neither_stales_nor_refuses_live_machines(
    config_path: Path, step_ms: int
) -> None:
    clocks = Clock()
    gateway = start(config_path, clocks)
    stream(gateway, clocks, range(10))
    clocks.ms += step_ms  # the gateway's clock steps; the machines' clocks do not
    stream(gateway, clocks, range(10, 100))
    assert gateway.steady.steps == 1
    assert gateway.metrics.rejected[("rules", "future")] == 0
    assert {v.state for v in gateway.plant.view()} == {State.IDLE}
    assert gateway.metrics.events["StateChanged"] == 2  # idle once each, nothing since
    # the machines stop: offline after stale_after of real (monotonic) time, at their last
    # sample, whatever the stepped wall clock says
    clocks.mono += 61_000 + gateway.options.lateness_ms
    clocks.ms += 61_000 + gateway.options.lateness_ms
    gateway.tick()
    gateway.commit()
    machines = {r["machine"]: (r["state"], r["since_ms"]) for r in rows(gateway, "machines")}
    assert machines == {"laser-01": ("offline", T0 + 99_000), "laser-02": ("offline", T0 + 99_000)}


def test_a_clock_correction_confirmed_by_the_sources_is_followed(config_path: Path) -> None:
    clocks = Clock()
    gateway = start(config_path, clocks)
    stream(gateway, clocks, range(10))
    clocks.ms += HOUR  # the gateway was an hour slow; NTP fixes it; the sources were right
    stream(gateway, clocks, range(10, 20), source_offset=HOUR)
    assert gateway.steady.steps == 1
    assert gateway.steady.resyncs == 1
    assert not gateway.steady.stepped
    assert gateway.steady.now() == clocks.ms
    assert gateway.metrics.rejected[("rules", "future")] == 0

"""The whole spine against real peers: paho publisher -> Mosquitto -> gateway -> victoria-metrics.

A scripted scenario with source timestamps is published over MQTT; the gateway runs on a
clock the test moves, so the scenario's minute of plant time runs in a few seconds of wall
time while every protocol hop is real.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from tests.auth import bearer
from tests.fakes import T0, Clock
from tests.peers import VictoriaMetrics
from tests.sites import live_site, pilot_camera, pilot_laser
from tests.waiting import publish_on_time

from pilotline.demo.broker import MosquittoBroker, free_port
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway, ServiceOptions

pytestmark = pytest.mark.integration


def laser(second: int) -> str:
    # running 0-19 s, idle 20-49 s, running 50-59 s, then silence
    return "NotExecuting" if 20 <= second < 50 else "Executing"


def cam(second: int) -> float:
    # running 0-9 s, idle 10-39 s with a one-sample blip at 25 s, running 40-59 s
    if second == 25:
        return 150.0
    return 10.0 if 10 <= second < 40 else 300.0


def scenario(seconds: range) -> list[tuple[str, bytes]]:
    messages = []
    for s in seconds:
        ts = T0 + s * 1000
        messages.append(
            (
                "pilot/photonics/laser-01/telemetry",
                json.dumps({"ts": ts, "state": laser(s), "temperature_c": 20.0 + s / 10}).encode(),
            )
        )
        messages.append(
            ("pilot/imaging/cam-02/telemetry", json.dumps({"ts": ts, "power_w": cam(s)}).encode())
        )
    return messages


async def until(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.05)


@pytest.fixture
async def running(
    tmp_path: Path, broker: MosquittoBroker, vm: VictoriaMetrics
) -> AsyncIterator[tuple[Gateway, Clock, str]]:
    port = free_port()
    path = tmp_path / "site.yaml"
    path.write_text(
        live_site(
            {
                "photonics": [pilot_laser("laser-cutting", "laser-marking")],
                "imaging": [pilot_camera()],
            },
            site="test-site",
            mqtt_url=broker.url,
            client_id=f"gw-e2e-{port}",
            port=port,
            influx_url=vm.url,
            store=tmp_path / "gw.db",
            defaults={"debounce_s": 2, "stale_after_s": 5, "min_idle_s": 5,
                      "publish_interval_s": 30, "offering": "always"},
        )
    )
    clock = Clock(T0)
    gateway = Gateway(load_config(path), clock_ms=clock, options=ServiceOptions(lateness_ms=0))
    task = asyncio.create_task(gateway.run())
    await until(lambda: gateway.health().get("mqtt", {}).get("healthy", False))
    yield gateway, clock, f"http://127.0.0.1:{port}"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def received(gateway: Gateway) -> Callable[[], int]:
    return lambda: sum(gateway.metrics.samples.values())


def series(vm: VictoriaMetrics, name: str, **labels: str) -> list[tuple[int, float]]:
    """(timestamp ms, value) pairs of every series named ``name`` matching ``labels``."""
    matcher = ",".join([f'__name__="{name}"', *(f'{k}="{v}"' for k, v in labels.items())])
    points: list[tuple[int, float]] = []
    for s in vm.export("{" + matcher + "}"):
        points += zip(s["timestamps"], s["values"], strict=True)
    return sorted(points)


async def test_scenario_becomes_contracted_points(
    running: tuple[Gateway, Clock, str], vm: VictoriaMetrics
) -> None:
    gateway, clock, api = running
    messages = scenario(range(60))
    await publish_on_time(gateway.config.mqtt.url, messages, clock, received(gateway))  # type: ignore[union-attr]
    await until(lambda: sum(gateway.metrics.samples.values()) == len(messages))
    # Ten minutes later on the gateway's clock: both machines are stale, and periodic reports
    # at T0+30 s ... T0+600 s have been due.
    clock.ms = T0 + 600_000
    await until(lambda: gateway.metrics.events["ZoneCapacity"] >= 20 * 5)
    # committed (the committer lingers up to 10 ms after the events), then drained
    await until(lambda: not len(gateway.staged) and gateway.store.outbox_depth() == 0)

    at = lambda s: T0 + s * 1000  # noqa: E731
    assert series(vm, "machine_state_state_code", machine="laser-01", owner="acme-optics") == [
        (at(0), 1.0),
        (at(20), 2.0),
        (at(50), 1.0),
        (at(59), 0.0),  # stale: offline from the last sample
    ]
    assert series(vm, "machine_state_state_code", machine="cam-02") == [
        (at(0), 1.0),
        (at(10), 2.0),  # the blip at 25 s is shorter than the debounce and splits nothing
        (at(40), 1.0),
        (at(59), 0.0),
    ]
    assert series(vm, "idle_window_duration_s", machine="laser-01") == [(at(20), 30.0)]
    assert series(vm, "idle_window_end_ms", machine="laser-01") == [(at(20), float(at(50)))]
    assert series(vm, "idle_window_offered", machine="laser-01") == [(at(20), 1.0)]
    assert series(vm, "idle_window_duration_s", machine="cam-02") == [(at(10), 30.0)]

    available = series(vm, "capacity_available", machine="laser-01", site="test-site")
    # becomes available min_idle_s (5 s) into the window, unavailable at the first running
    # sample (50 s, before the debounce confirms it), then periodic reports of 0
    assert available[:3] == [(at(25), 1.0), (at(30), 1.0), (at(50), 0.0)]
    assert {v for t, v in available if t > at(50)} == {0.0}

    zone = series(vm, "zone_capacity_available", zone="photonics", capability="laser-cutting")
    assert zone[0] == (at(30), 1.0)  # at the 30 s report laser-01 was bookable
    offline = series(vm, "zone_capacity_offline", zone="imaging", capability="all")
    assert offline[0] == (at(30), 0.0)
    assert offline[-1] == (at(600), 1.0)

    telemetry = series(vm, "telemetry_temperature_c", machine="laser-01", zone="photonics")
    assert len(telemetry) == 60
    assert telemetry[0] == (at(0), 20.0)

    async with httpx.AsyncClient(base_url=api, headers=bearer(gateway.store)) as client:
        health = (await client.get("/health")).json()
        assert health["healthy"] is True
        assert set(health["mqtt"]["subscriptions"]) == {
            "pilot/photonics/laser-01/telemetry",
            "pilot/imaging/cam-02/telemetry",
        }
        windows = (await client.get("/api/windows", params={"since": T0})).json()
        assert {(w["machine"], w["start_ms"], w["end_ms"]) for w in windows} == {
            ("laser-01", at(20), at(50)),
            ("cam-02", at(10), at(40)),
        }
        machines = {m["id"]: m["state"] for m in (await client.get("/api/machines")).json()}
        assert machines == {"laser-01": "offline", "cam-02": "offline"}
        metrics = (await client.get("/metrics")).text
        assert 'pilotline_samples_total{machine="laser-01"} 60.0' in metrics
        assert "pilotline_outbox_depth 0.0" in metrics


async def test_store_down_mid_run_loses_no_point(
    running: tuple[Gateway, Clock, str], vm: VictoriaMetrics
) -> None:
    gateway, clock, _ = running
    url = gateway.config.mqtt.url  # type: ignore[union-attr]
    first = scenario(range(20))
    await publish_on_time(url, first, clock, received(gateway))
    await until(lambda: gateway.store.outbox_depth() == 0)
    vm.persist()

    vm.stop(kill=True)
    second = scenario(range(20, 60))
    await publish_on_time(url, second, clock, received(gateway))
    await until(lambda: sum(gateway.metrics.samples.values()) == 120)
    clock.ms = T0 + 120_000
    await until(lambda: gateway.health()["influx"]["healthy"] is False)
    waiting = gateway.store.outbox_depth()
    assert waiting >= 80  # telemetry of the second part at least, held durably

    vm.start()
    await until(lambda: gateway.store.outbox_depth() == 0, timeout_s=60)
    temperature = series(vm, "telemetry_temperature_c", machine="laser-01")
    power = series(vm, "telemetry_power_w", machine="cam-02")
    assert [t for t, _ in temperature] == [T0 + s * 1000 for s in range(60)]
    assert [t for t, _ in power] == [T0 + s * 1000 for s in range(60)]
    states = series(vm, "machine_state_state_code", machine="laser-01")
    assert [v for _, v in states] == [1.0, 2.0, 1.0, 0.0]
    assert gateway.health()["influx"]["healthy"] is True
    print(
        f"\nstore away: 120 samples published ({len(second)} while victoria-metrics was down), "
        f"{sum(gateway.metrics.samples.values())} received, outbox held {waiting} lines, "
        f"{len(temperature) + len(power)} telemetry points written, "
        f"{120 - len(temperature) - len(power)} lost"
    )

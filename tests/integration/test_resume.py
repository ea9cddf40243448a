"""States and idle windows survive a killed gateway; outages show as `offline` only where data
really stopped. Real Mosquitto, victoria-metrics and asyncua servers; real time.

- SIGKILL, 6 s down (longer than ``stale_after``), restart: a machine that kept reporting
  `idle` keeps its one window (no new state change, no second window, closed once with its
  original start); one silent since before the kill goes `offline` at its last sample with
  its window closed at its last idle sample; one that changed state while the gateway was
  down changes at the true source time (the broker's backlog is applied before the wall
  clock moves the rules).
- A broker restart shorter than ``stale_after``: no state changes at all.
- One of two OPC UA servers down longer than ``stale_after``: its machines `offline`, and only
  those (its coming back by itself is test_opcua_gateway.py's).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from tests.auth import cli_bearer
from tests.integration.test_crash import Api, GatewayProcess, pilotline_command, until
from tests.peers import DemoServer, VictoriaMetrics
from tests.sites import demo_opcua, live_site, machine_config, site_yaml

from pilotline.demo.broker import MosquittoBroker, find_mosquitto, free_port
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway
from pilotline.rules import State

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed"),
]

STALE_S = 4
PERIOD_S = 0.25
TOPIC = "pilot/photonics/{}/telemetry"

def site(
    names: list[str], *, mqtt_url: str, port: int, store: Path, stale: int,
    influx_url: str | None = None,
) -> str:
    """The machines ``names`` in one zone, each on its own topic."""
    return live_site(
        {"photonics": [machine_config(m, topic=TOPIC.format(m)) for m in names]},
        site="resume-site",
        mqtt_url=mqtt_url,
        client_id=f"gw-resume-{port}",
        port=port,
        influx_url=influx_url,
        store=store,
        defaults={"debounce_s": 0, "stale_after_s": stale, "min_idle_s": 1,
                  "publish_interval_s": 60},
    )


class Plant(threading.Thread):
    """Machines publishing their state every PERIOD_S at QoS 1 with their own source times;
    ``states[machine]`` is what each says now (None: silent). Records what it published."""

    def __init__(self, url: str, states: dict[str, str | None]) -> None:
        super().__init__(name="resume-plant", daemon=True)
        self.states = states
        self.published: dict[str, list[tuple[int, str]]] = {m: [] for m in states}
        self.stop = threading.Event()
        host, port = url.removeprefix("mqtt://").split(":")
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="resume-plant")
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect(host, int(port))
        self.client.loop_start()

    def run(self) -> None:
        while not self.stop.wait(PERIOD_S):
            ts = time.time_ns() // 1_000_000
            for machine, state in list(self.states.items()):
                if state is None:
                    continue
                payload = json.dumps({"ts": ts, "state": state, "power_w": 1.0})
                self.client.publish(TOPIC.format(machine), payload, qos=1)
                self.published[machine].append((ts, state))

    def close(self) -> None:
        self.stop.set()
        self.join(5)
        time.sleep(0.5)  # let the last PUBACKs in
        self.client.loop_stop()
        self.client.disconnect()


def store_rows(store: Path, sql: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(store)
    try:
        return list(db.execute(sql))
    finally:
        db.close()


def test_sigkill_and_restart_resume_states_and_windows(
    tmp_path: Path, broker: MosquittoBroker, vm: VictoriaMetrics
) -> None:
    names = ["steady", "silent", "changes"]
    port = free_port()
    store = tmp_path / "gw.db"
    config = tmp_path / "site.yaml"
    config.write_text(
        site(names, mqtt_url=broker.url, port=port, store=store, stale=STALE_S,
             influx_url=vm.url)
    )
    api = Api(f"http://127.0.0.1:{port}", cli_bearer(pilotline_command(), config))
    started: list[GatewayProcess] = []
    plant = Plant(broker.url, {"steady": "NotExecuting", "silent": "NotExecuting",
                               "changes": "Executing"})
    try:
        first = GatewayProcess(config, tmp_path, "gateway-1")
        started.append(first)
        until(lambda: api.healthy(first), 15, "the first gateway, subscribed and healthy")
        plant.start()
        time.sleep(3)
        plant.states["silent"] = None  # stops reporting before the kill
        time.sleep(1)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        killed_at = time.time_ns() // 1_000_000
        time.sleep(3)
        plant.states["changes"] = "NotExecuting"  # while no gateway runs
        time.sleep(3)  # down 6 s in all: longer than stale_after
        second = GatewayProcess(config, tmp_path, "gateway-2")
        started.append(second)
        until(
            lambda: any(e["event"] == "gateway.caught_up" for e in second.events()),
            20,
            "the restarted gateway to catch up on the broker's backlog",
        )
        time.sleep(2)
        plant.close()  # everything stops reporting: all go offline, all windows close
        until(
            lambda: second.proc.poll() is None
            and len(store_rows(store, "SELECT 1 FROM idle_windows WHERE end_ms IS NOT NULL"))
            == 3,
            STALE_S + 10,
            "every window closed",
        )
        until(lambda: api.outbox_depth() == 0, 15, "the outbox drained")
        second.proc.send_signal(signal.SIGTERM)
        second.proc.wait(15)
    finally:
        plant.stop.set()
        for gateway in started:
            gateway.kill()

    published = plant.published
    first_ts = {m: published[m][0][0] for m in names}
    last_ts = {m: published[m][-1][0] for m in names}
    switch = next(ts for ts, state in published["changes"] if state == "NotExecuting")
    assert killed_at < switch, "the change did not happen while the gateway was down"
    caught = next(e for e in second.events() if e["event"] == "gateway.caught_up")
    resumed = next(e for e in second.events() if e["event"] == "gateway.resumed")
    assert resumed["machines"] == 3
    assert resumed["open_windows"] == 2

    windows = store_rows(store, "SELECT machine, start_ms, end_ms FROM idle_windows ORDER BY 1")
    assert windows == [
        ("changes", switch, last_ts["changes"]),
        ("silent", first_ts["silent"], last_ts["silent"]),
        ("steady", first_ts["steady"], last_ts["steady"]),  # one window across the restart
    ]
    history = store_rows(store, "SELECT machine, ts_ms, state FROM state_history ORDER BY 1, 2")
    assert history == [
        ("changes", first_ts["changes"], "running"),
        ("changes", switch, "idle"),  # at its source time, from the backlog
        ("changes", last_ts["changes"], "offline"),
        ("silent", first_ts["silent"], "idle"),
        ("silent", last_ts["silent"], "offline"),  # at its last sample, before the kill
        ("steady", first_ts["steady"], "idle"),
        ("steady", last_ts["steady"], "offline"),
    ]

    def points(name: str, machine: str) -> list[int]:
        found: list[int] = []
        for s in vm.export(f'{{__name__="{name}",machine="{machine}",site="resume-site"}}'):
            found += s["timestamps"]
        return sorted(found)

    for machine, start, _end in windows:
        assert points("idle_window_duration_s", machine) == [start]  # written once
    assert points("machine_state_state_code", "steady") == [first_ts["steady"], last_ts["steady"]]
    sent = sum(len(v) for v in published.values())
    telemetry = sum(len(points("telemetry_power_w", m)) for m in names)
    print(
        f"\nresume: {sent} samples published, {telemetry} telemetry points in victoria-metrics "
        f"({sent - telemetry} lost); windows {len(windows)} (one each, none doubled); "
        f"backlog caught up by '{caught['reason']}' after {caught['after_s']} s "
        f"with {caught['samples']} samples"
    )
    assert telemetry == sent


async def wait_for(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.05)


async def test_a_broker_restart_shorter_than_stale_after_changes_no_state(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    names = ["laser-01", "laser-02"]
    port = free_port()
    config = tmp_path / "site.yaml"
    config.write_text(
        site(names, mqtt_url=broker.url, port=port, store=tmp_path / "gw.db", stale=6)
    )
    gateway = Gateway(load_config(config))
    task = asyncio.create_task(gateway.run(api=False))
    plant = Plant(broker.url, {"laser-01": "NotExecuting", "laser-02": "Executing"})
    try:
        await wait_for(lambda: gateway.health()["mqtt"]["healthy"])
        plant.start()
        await wait_for(lambda: gateway.metrics.events["StateChanged"] == 2)
        await asyncio.sleep(1)
        broker.stop()
        down = time.monotonic()
        await asyncio.sleep(2)
        broker.start()
        await wait_for(lambda: gateway.health()["mqtt"]["healthy"])
        back = time.monotonic() - down
        await asyncio.sleep(7)  # beyond stale_after after the restart
        received = gateway.metrics.samples.copy()
    finally:
        plant.close()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert gateway.mqtt is not None
    assert gateway.mqtt.health().reconnects >= 1
    assert gateway.metrics.events["StateChanged"] == 2, "the broker restart showed as a change"
    print(
        f"\nbroker restart: down {back:.1f} s (< stale_after 6 s); samples "
        f"{dict(received)}; state changes 2 (the initial ones), none from the gap"
    )


async def test_an_opcua_server_down_makes_only_its_machines_offline(tmp_path: Path) -> None:
    a, b = DemoServer().start(), DemoServer().start()
    placement = {"laser-cut-01": (a, "machinery"), "bonder-01": (b, "packml"),
                 "laser-mark-01": (b, "mtconnect")}
    machines = [
        machine_config(m, "acme-optics", opcua=demo_opcua(server.endpoint, m, model))
        for m, (server, model) in placement.items()
    ]
    path = tmp_path / "site.yaml"
    path.write_text(
        site_yaml(
            {"photonics": machines},
            site="opcua-split",
            mqtt=None,
            influx=None,
            store=tmp_path / "gw.db",
            defaults={"debounce_s": 0, "stale_after_s": 3, "min_idle_s": 1,
                      "publish_interval_s": 60},
        )
    )
    gateway = Gateway(load_config(path))
    task = asyncio.create_task(gateway.run(api=False))

    def states() -> dict[str, State]:
        return {v.id: v.state for v in gateway.plant.view()}

    try:
        await wait_for(lambda: State.OFFLINE not in states().values())
        a.kill()
        await wait_for(lambda: states()["laser-cut-01"] is State.OFFLINE)
        await asyncio.sleep(1)
        during = states()
        gateway.commit()  # (coming back by itself: test_opcua_gateway.py)
        history = gateway.store.state_history(0, 2**62)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        a.kill()
        b.kill()
    assert during["laser-cut-01"] is State.OFFLINE
    assert during["bonder-01"] is not State.OFFLINE
    assert during["laser-mark-01"] is not State.OFFLINE
    offline = sorted({r["machine"] for r in history if r["state"] == "offline"})
    assert offline == ["laser-cut-01"], history
    print(f"\nopcua split: server A down > stale_after; offline: {offline}; B's machines never")

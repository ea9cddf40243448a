"""A broker that goes away is one collector alert, not one per machine (real Mosquitto).

Six machines publish over MQTT through a real broker to the gateway running on the wall
clock. The broker is killed: the MQTT collector disconnects, every machine goes stale, and
the operators must get exactly one `collector-down` alert, not six `machine-offline` ones.
The broker comes back: the collector alert resolves and no machine alert ever fired.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from structlog.testing import capture_logs
from tests.sites import live_site, machine_config

from pilotline.demo.broker import MosquittoBroker, free_port
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway, ServiceOptions

pytestmark = pytest.mark.integration

MACHINES = [f"m-{i}" for i in range(6)]

ALERTS = {
    "group_wait": "0s",
    "rules": [
        {"name": "machine-offline", "severity": "warning", "state": "offline", "for": "1s"},
        {"name": "machine-down", "severity": "critical", "state": "down", "for": "1s"},
        {"name": "collector-down", "severity": "critical", "collector": "disconnected",
         "for": "2s"},
    ],
}


class Publisher:
    """Every machine reports `Executing` every 0.3 s; paho reconnects by itself."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="plant")
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.3):
            ts = int(time.time() * 1000)
            for m in MACHINES:
                payload = json.dumps({"ts": ts, "state": "Executing"})
                self.client.publish(f"plant/{m}", payload, qos=0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.client.loop_stop()
        self.client.disconnect()


async def until(condition: Callable[[], bool], timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.05)


def transitions(logs: list[dict[str, Any]]) -> list[tuple[str, str, bool]]:
    return [
        (e["rule"], e["machine"], e["firing"]) for e in logs if e["event"] == "alert.transition"
    ]


async def test_a_lost_broker_is_one_collector_alert(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(
        live_site(
            {"photonics": [machine_config(m, topic=f"plant/{m}") for m in MACHINES]},
            site="alert-site",
            mqtt_url=broker.url,
            client_id="gw-alerts",
            port=free_port(),
            store=tmp_path / "gw.db",
            defaults={"debounce_s": 0, "stale_after_s": 2, "min_idle_s": 60,
                      "publish_interval_s": 60},
            alerts=ALERTS,
        )
    )
    gateway = Gateway(load_config(path), options=ServiceOptions(lateness_ms=200))
    publisher = Publisher(broker.port)
    with capture_logs() as logs:
        task = asyncio.create_task(gateway.run(api=False))
        try:
            await until(
                lambda: all(v.state.value == "running" for v in gateway.plant.view()), 15
            )
            # Machines count as offline until their first state: that alert may not fire
            # either (for: 1s is longer than it takes them to report).
            assert transitions(logs) == []

            broker.stop(kill=True)
            try:
                await until(lambda: ("collector-down", "mqtt", True) in transitions(logs), 15)
            except TimeoutError:
                names = sorted({str(e["event"]) for e in logs})
                raise AssertionError(
                    f"caught_up={gateway.catch_up.caught_up} "
                    f"connected={[c.connected for c in gateway.collectors]} events={names}"
                ) from None
            await asyncio.sleep(3)  # machines are stale by now (stale_after 2 s + for 1 s)
            assert all(v.state.value == "offline" for v in gateway.plant.view())
            assert transitions(logs) == [("collector-down", "mqtt", True)]

            broker.start()
            await until(lambda: ("collector-down", "mqtt", False) in transitions(logs), 20)
            await until(
                lambda: all(v.state.value == "running" for v in gateway.plant.view()), 15
            )
            await asyncio.sleep(2)  # longer than the machine rules' for:
            assert transitions(logs) == [
                ("collector-down", "mqtt", True),
                ("collector-down", "mqtt", False),
            ]
            firing = {(a.rule, a.machine) for a in gateway.alerts.view()}
            assert firing == set()
        finally:
            publisher.close()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


class Rival:
    """A second gateway on another host with our client id, as paho reconnects it: when the
    broker hands the session back to us, it takes it again within half a second."""

    def __init__(self, port: int, client_id: str) -> None:
        self.drops: list[float] = []
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.client.reconnect_delay_set(0.2, 0.5)
        self.client.on_disconnect = lambda *_: self.drops.append(time.monotonic())
        self.client.connect("127.0.0.1", port, clean_start=False)
        self.client.loop_start()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


async def test_a_second_client_with_our_client_id_is_an_error_an_alert_and_unhealthy(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """Mosquitto 2.0.11 (this machine's) closes the old connection without DISCONNECT 0x8E,
    so the gateway recognises the takeover by the broker closing it again and again;
    brokers that send 0x8E are recognised at the first one (tests/collectors)."""
    path = tmp_path / "site.yaml"
    path.write_text(
        live_site(
            {"photonics": [machine_config(m, topic=f"plant/{m}") for m in MACHINES]},
            site="alert-site",
            mqtt_url=broker.url,
            client_id="gw-twin",
            port=free_port(),
            store=tmp_path / "gw.db",
            defaults={"debounce_s": 0, "stale_after_s": 60, "min_idle_s": 60,
                      "publish_interval_s": 60},
            alerts=ALERTS,
        )
    )
    gateway = Gateway(load_config(path), options=ServiceOptions(lateness_ms=200))
    with capture_logs() as logs:
        task = asyncio.create_task(gateway.run(api=False))
        rival: Rival | None = None
        try:
            # healthy, and the rules timer runs (the alert rules with it)
            await until(lambda: gateway.health()["healthy"] and gateway.caught_up, 15)
            rival = Rival(broker.port, "gw-twin")

            def taken_over() -> list[dict[str, Any]]:
                return [e for e in logs if e["event"] == "mqtt.session_taken_over"]

            await until(lambda: bool(taken_over()), 15)
            event = taken_over()[0]
            assert event["log_level"] == "error"
            assert event["client_id"] == "gw-twin"
            assert "second gateway" in event["likely_cause"]
            assert event["retry_in_s"] >= 10  # minutes at worst, not a second

            health = gateway.health()
            assert health["healthy"] is False
            assert health["mqtt"]["healthy"] is False
            assert health["mqtt"]["why"].startswith("session taken over by another client")
            assert "'gw-twin'" in health["mqtt"]["why"]
            assert health["mqtt"]["contested_since_ms"] is not None
            await until(lambda: ("collector-down", "mqtt", True) in transitions(logs), 15)

            # the gateway keeps away: the rival holds the session, no flapping every second
            drops = len(rival.drops)
            await asyncio.sleep(3)
            assert len(rival.drops) == drops
            assert gateway.health()["mqtt"]["healthy"] is False
            assert taken_over() == [event]
        finally:
            if rival is not None:
                rival.close()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

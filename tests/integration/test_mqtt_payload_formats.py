"""Payload formats and topic templates through a real Mosquitto and the gateway.

One site, four machines, each speaking as a tool of the plant does (payload shapes from
those tools' documentation, see tests/collectors/test_mqtt_formats.py):
- ``cnc-1`` and ``cnc-2`` under one UMH historian pattern ``umh/v1/acme/+/{machine}/_historian``
  (``payload: umh``): ``{"timestamp_ms": ..., "<tag>": value}``;
- ``oven-1``: Telegraf's JSON output (``payload: telegraf``), the time in seconds;
- ``press-1``: one value per topic, ``plant/+/press-1/{signal}`` carrying ``812.5``;
- ``cam-1``: today's format (no ``payload:``), as before.
Each sample must carry the publisher's time, not its arrival; a UMH payload without
``timestamp_ms`` is quarantined as ``missing_time``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt import publish

from pilotline.demo.broker import MosquittoBroker, find_mosquitto, free_port
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway, ServiceOptions

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed"),
]

SITE = """\
site: formats
mqtt:
  url: "{url}"
  client_id: gw-formats
  topics:
    - topic: umh/v1/acme/+/{{machine}}/_historian
      payload: umh
influx: {{url: "http://127.0.0.1:{dead_port}", org: o, bucket: b}}
store: {store}
defaults: {{debounce_s: 1, stale_after_s: 600, min_idle_s: 60}}
zones:
  - id: z
    machines:
      - id: cnc-1
        owner: o
        mqtt: {{}}
        state: {{signal: power_w, running_above: 100, idle_below: 50}}
      - id: cnc-2
        owner: o
        mqtt: {{}}
        state: {{signal: power_w, running_above: 100, idle_below: 50}}
      - id: oven-1
        owner: o
        mqtt: {{topic: telegraf/oven-1/modbus, payload: telegraf}}
        state: {{signal: power_w, running_above: 100, idle_below: 50}}
      - id: press-1
        owner: o
        mqtt: {{topic: "plant/+/press-1/{{signal}}"}}
        state: {{signal: power_w, running_above: 100, idle_below: 50}}
      - id: cam-1
        owner: o
        mqtt: {{topic: pilot/cam-1/telemetry}}
        state: {{signal: power_w, running_above: 100, idle_below: 50}}
"""


@dataclass
class Running:
    gateway: Gateway
    broker: MosquittoBroker

    def publish(self, topic: str, payload: bytes | str) -> None:
        publish.single(
            topic, payload, qos=1, hostname="127.0.0.1", port=self.broker.port,
            protocol=paho.MQTTv5,
        )

    def telemetry(self, machine: str) -> list[tuple[str, int]]:
        """(fields, timestamp) of ``machine``'s ``telemetry`` lines in the outbox."""
        out = []
        for _, line in self.gateway.store.outbox_peek(1000):
            if line.startswith("telemetry,") and f"machine={machine}," in line + ",":
                _, fields, stamp = line.rsplit(" ", 2)
                out.append((fields, int(stamp)))
        return out


async def until(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)


@pytest.fixture
async def running(tmp_path: Path, broker: MosquittoBroker) -> AsyncIterator[Running]:
    path = tmp_path / "site.yaml"
    path.write_text(
        SITE.format(url=broker.url, dead_port=free_port(), store=tmp_path / "gw.db")
    )
    gateway = Gateway(load_config(path), options=ServiceOptions(stop_timeout_s=0.1))
    task = asyncio.create_task(gateway.run(api=False))
    await until(lambda: gateway.mqtt is not None and gateway.mqtt.health().subscribed)
    yield Running(gateway, broker)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def stamp(line_ts: int, ms: int) -> bool:
    """A line's timestamp is ``ms`` (the writer's precision is ms or ns)."""
    return line_ts in (ms, ms * 1_000_000)


async def test_each_preset_and_one_value_per_topic_keep_the_publishers_time(
    running: Running,
) -> None:
    gateway = running.gateway
    sent_ms = int(time.time() * 1000) - 3_000  # seconds ago: clearly not the arrival time
    sent_s = sent_ms // 1000
    running.publish(
        "umh/v1/acme/hall-1/cnc-1/_historian",
        json.dumps({"timestamp_ms": sent_ms, "power_w": 812.5, "spindle_rpm": 1200}),
    )
    running.publish(
        "umh/v1/acme/hall-2/cnc-2/_historian",
        json.dumps({"timestamp_ms": sent_ms + 1, "power_w": 20, "door_open": True}),
    )
    running.publish(
        "telegraf/oven-1/modbus",
        json.dumps(
            {
                "fields": {"power_w": 640, "temp_c": 182.5},
                "name": "modbus",
                "tags": {"host": "oven-gw", "name": "oven-1"},
                "timestamp": sent_s,
            }
        ),
    )
    running.publish("plant/hall-1/press-1/power_w", "812.5")
    running.publish("pilot/cam-1/telemetry", json.dumps({"ts": sent_ms + 2, "power_w": 5}))
    machines = ("cnc-1", "cnc-2", "oven-1", "press-1", "cam-1")
    await until(lambda: all(gateway.metrics.samples[m] == 1 for m in machines))
    await until(lambda: all(running.telemetry(m) for m in machines))

    [(fields, ts)] = running.telemetry("cnc-1")
    assert stamp(ts, sent_ms)
    assert sorted(fields.split(",")) == ["power_w=812.5", "spindle_rpm=1200"]
    [(fields, ts)] = running.telemetry("cnc-2")
    assert stamp(ts, sent_ms + 1)
    assert sorted(fields.split(",")) == ["door_open=1", "power_w=20"]
    [(fields, ts)] = running.telemetry("oven-1")
    assert stamp(ts, sent_s * 1000)
    assert sorted(fields.split(",")) == ["power_w=640", "temp_c=182.5"]
    [(fields, _)] = running.telemetry("press-1")  # a bare value: stamped at its arrival
    assert fields == "power_w=812.5"
    [(fields, ts)] = running.telemetry("cam-1")
    assert stamp(ts, sent_ms + 2)
    assert gateway.store.quarantine_count() == 0
    assert set(gateway.health()["mqtt"]["subscriptions"]) == {
        "umh/v1/acme/+/cnc-1/_historian",
        "umh/v1/acme/+/cnc-2/_historian",
        "telegraf/oven-1/modbus",
        "plant/+/press-1/+",
        "pilot/cam-1/telemetry",
    }


async def test_a_payload_without_its_time_is_quarantined_and_an_unknown_machine_not_sent(
    running: Running,
) -> None:
    gateway = running.gateway
    running.publish("umh/v1/acme/hall-1/cnc-1/_historian", json.dumps({"power_w": 812.5}))
    running.publish(
        "telegraf/oven-1/modbus",
        json.dumps({"fields": {"power_w": 1}, "name": "modbus", "tags": {}}),
    )
    # no machine cnc-9 in the site: not subscribed, so the broker never sends it
    running.publish(
        "umh/v1/acme/hall-1/cnc-9/_historian",
        json.dumps({"timestamp_ms": int(time.time() * 1000), "power_w": 1}),
    )
    await until(lambda: gateway.store.quarantine_count() == 2)
    await asyncio.sleep(0.3)  # room for a late delivery of cnc-9's, were it sent

    rows = sorted(gateway.store.quarantine(), key=lambda r: str(r["machine"]))
    assert [(r["machine"], r["reason"]) for r in rows] == [
        ("cnc-1", "missing_time"),
        ("oven-1", "missing_time"),
    ]
    assert gateway.metrics.samples["cnc-1"] == 0
    assert gateway.health()["mqtt"]["rejected"] == {"missing_time": 2}
    assert gateway.health()["mqtt"]["received"] == 2

"""What one publisher can push into the gateway is bounded: a real Mosquitto, the gateway.

- thousands of signals in one payload become at most ``mqtt.max_signals`` telemetry fields,
  the machine's configured signals always among them, the rest counted;
- a message larger than the gateway's Maximum Packet Size (MQTT 5 CONNECT) is never sent
  to it by the broker: not read, not counted, the connection untouched;
- a signal name line protocol cannot write (ending in a backslash) quarantines its payload
  as ``bad_signal_name``, with no traceback in the log;
- the shipped Mosquitto configuration refuses a publisher's packet over that same size.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt import publish
from structlog.testing import capture_logs
from tests.shipped_broker import SHIPPED, ShippedBroker, make_accounts

from pilotline.collectors.mqtt import MqttBrokerConfig
from pilotline.demo.broker import MosquittoBroker, find_mosquitto, free_port
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway, ServiceOptions

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed"),
]

TOPIC = "hostile/m-1"
SITE = """\
site: hostile
mqtt: {{url: "{url}", client_id: gw-hostile}}
influx: {{url: "http://127.0.0.1:{dead_port}", org: o, bucket: b}}
store: {store}
api: 127.0.0.1:{api_port}
defaults: {{debounce_s: 1, stale_after_s: 600, min_idle_s: 60}}
zones:
  - id: z
    machines:
      - id: m-1
        owner: o
        state: {{signal: power_w, running_above: 100, idle_below: 50}}
        mqtt: {{topic: {topic}}}
alerts:
  rules:
    - {{name: hot, signal: temp_c, above: 90}}
"""


@dataclass
class Running:
    gateway: Gateway
    broker: MosquittoBroker

    def publish(self, payload: bytes | str) -> None:
        publish.single(TOPIC, payload, qos=1, hostname="127.0.0.1", port=self.broker.port)

    def mqtt_health(self) -> dict[str, object]:
        part: dict[str, object] = self.gateway.health()["mqtt"]
        return part

    def telemetry_fields(self) -> list[list[str]]:
        """The field keys of each ``telemetry`` line in the outbox (InfluxDB is away)."""
        return [
            [field.split("=", 1)[0] for field in line.split(" ")[1].split(",")]
            for _, line in self.gateway.store.outbox_peek(1000)
            if line.startswith("telemetry,")
        ]


async def until(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)


@pytest.fixture
async def running(tmp_path: Path, broker: MosquittoBroker) -> AsyncIterator[Running]:
    path = tmp_path / "site.yaml"
    path.write_text(
        SITE.format(
            url=broker.url,
            dead_port=free_port(),  # nothing listens: telemetry stays in the outbox
            store=tmp_path / "gw.db",
            api_port=free_port(),
            topic=TOPIC,
        )
    )
    # InfluxDB is away: do not wait for the outbox to flush on stop.
    gateway = Gateway(load_config(path), options=ServiceOptions(stop_timeout_s=0.1))
    task = asyncio.create_task(gateway.run(api=False))
    assert gateway.mqtt is not None
    await until(lambda: gateway.mqtt is not None and gateway.mqtt.health().subscribed)
    yield Running(gateway, broker)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def now_ms() -> int:
    return int(time.time() * 1000)


async def test_thousands_of_signals_become_at_most_max_signals_fields(running: Running) -> None:
    """3,000 junk keys before the configured signals (the state signal ``power_w``, the alert
    rule's ``temp_c``): those two stay, 62 junk keys fill the default bound of 64, the other
    2,938 are dropped and counted; the machine's state still follows ``power_w``."""
    junk = {f"k{i}": float(i) for i in range(3000)}
    payload = json.dumps({"ts": now_ms(), **junk, "power_w": 800.0, "temp_c": 40.0})
    assert len(payload) < 65_536  # under max_payload_bytes: the cap is what bounds it
    running.publish(payload)
    gateway = running.gateway
    await until(lambda: gateway.metrics.samples["m-1"] == 1 and running.telemetry_fields())

    [fields] = running.telemetry_fields()
    assert len(fields) == 64
    assert {"power_w", "temp_c"} <= set(fields)
    assert fields[:62] == [f"k{i}" for i in range(62)]
    assert running.mqtt_health()["signals_dropped"] == {"m-1": 3000 - 62}
    assert running.mqtt_health()["rejected"] == {}


async def test_a_message_over_the_maximum_packet_size_never_reaches_the_gateway(
    running: Running,
) -> None:
    """512 KiB (the test broker takes up to 1 MiB from publishers) against the gateway's
    Maximum Packet Size of 64 KiB + headroom: the broker drops it instead of sending it,
    so the gateway neither reads nor counts it, and stays connected for the next one."""
    huge = json.dumps({"ts": now_ms(), "power_w": 1.0, "pad": "x" * (512 * 1024)})
    running.publish(huge)
    running.publish(json.dumps({"ts": now_ms(), "power_w": 800.0}))
    gateway = running.gateway
    await until(lambda: gateway.metrics.samples["m-1"] == 1)
    await asyncio.sleep(0.3)  # room for a late delivery of the large one, were it sent

    health = running.mqtt_health()
    assert health["received"] == 1
    assert health["rejected"] == {}
    assert health["connected"] is True
    assert health["reconnects"] == 0
    assert gateway.store.quarantine_count() == 0


async def test_a_signal_name_ending_in_a_backslash_is_quarantined(running: Running) -> None:
    gateway = running.gateway
    with capture_logs() as logs:
        running.publish(json.dumps({"ts": now_ms(), "power_w": 800.0, "bad\\": 1.0}))
        running.publish(json.dumps({"ts": now_ms(), "power_w": 700.0}))
        await until(lambda: gateway.metrics.samples["m-1"] == 1)
        await until(lambda: gateway.store.quarantine_count() == 1, timeout_s=5)

    [row] = gateway.store.quarantine()
    assert row["reason"] == "bad_signal_name"
    assert row["machine"] == "m-1"
    assert gateway.metrics.rejected[("mqtt", "bad_signal_name")] == 1
    assert running.mqtt_health()["rejected"] == {"bad_signal_name": 1}
    assert [e for e in logs if "exc_info" in e or e["log_level"] in ("error", "critical")] == []
    [warned] = [e for e in logs if e["event"] == "mqtt.payload_rejected"]
    assert warned["reason"] == "bad_signal_name"
    # The one sample that passed wrote its telemetry; the refused one wrote nothing.
    assert running.telemetry_fields() == [["power_w"]]


def publish_once(port: int, payload: bytes, account: tuple[str, str]) -> bool:
    """One QoS 1 PUBLISH on a connection of its own: True once the broker acknowledged it
    (``publish.single`` would reconnect and send it again forever)."""
    pub = paho.Client(paho.CallbackAPIVersion.VERSION2, reconnect_on_failure=False)
    pub.username_pw_set(*account)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    try:
        info = pub.publish(TOPIC, payload, qos=1)
        with contextlib.suppress(RuntimeError, ValueError):
            info.wait_for_publish(timeout=3)
        return info.is_published()
    finally:
        pub.disconnect()
        pub.loop_stop()


def test_the_shipped_broker_takes_no_packet_larger_than_the_gateway_asks_for(
    tmp_path: Path,
) -> None:
    """deploy/mosquitto/mosquitto.conf, run as it ships with the accounts its scripts make
    (tests/shipped_broker.py): a publisher's 200 KiB message is refused at the door, a
    normal one goes through, and its ``max_packet_size`` is the Maximum Packet Size the
    gateway asks for."""
    text = (SHIPPED / "mosquitto.conf").read_text()
    settings = dict(
        line.split(None, 1) for line in text.splitlines() if line.strip() and line[0] != "#"
    )
    default = MqttBrokerConfig(url="mqtt://127.0.0.1")
    assert int(settings["max_packet_size"]) == default.max_packet_bytes

    accounts = make_accounts(tmp_path, {"m-1": [TOPIC]})
    machine = ("m-1", accounts.machines["m-1"])
    with ShippedBroker(accounts, tmp_path / "data") as broker:
        got: list[bytes] = []
        sub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="shipped-sub")
        sub.username_pw_set(*accounts.gateway)
        sub.on_message = lambda _c, _u, msg: got.append(msg.payload)
        sub.connect("127.0.0.1", broker.gateway_port)
        sub.subscribe(TOPIC, qos=1)
        sub.loop_start()
        try:
            time.sleep(0.3)
            # the broker hangs up
            assert not publish_once(broker.machines_port, b"x" * (200 * 1024), machine)
            assert publish_once(broker.machines_port, b"x" * 100, machine)
            deadline = time.monotonic() + 5
            while not got and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.3)
        finally:
            sub.loop_stop()
            sub.disconnect()
        assert got == [b"x" * 100]

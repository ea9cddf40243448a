"""The demo publisher against a real Mosquitto."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from structlog.testing import capture_logs

from pilotline.demo.broker import MosquittoBroker
from pilotline.demo.plant import Plant
from pilotline.demo.publisher import PublishError, publish_plant, publish_timeline

pytestmark = pytest.mark.integration


class Collector:
    """A paho subscriber that records every message on ``pilot/#``."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-collector")
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "subscription not acknowledged"

    def _on_connect(self, client: mqtt.Client, *_: object) -> None:
        client.subscribe("pilot/#", qos=1)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[tuple[str, bytes]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= count:
                    break
            time.sleep(0.02)
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker() -> Iterator[MosquittoBroker]:
    with MosquittoBroker(persistence=False) as b:
        yield b


@pytest.fixture
def collector(broker: MosquittoBroker) -> Iterator[Collector]:
    c = Collector(broker)
    yield c
    c.close()


async def test_publish_plant_reaches_every_machine(
    broker: MosquittoBroker, collector: Collector
) -> None:
    plant = Plant(dropouts=False)
    sent = await publish_plant(plant, broker.url, interval_s=0.5, duration_s=2.0)
    assert sent >= 3 * len(plant.machines)  # ticks at 0, 0.5, 1.0, 1.5 s
    assert sent % len(plant.machines) == 0
    got = await asyncio.to_thread(collector.wait_for, sent)
    assert len(got) == sent
    assert {t for t, _ in got} == {m.topic for m in plant.machines}
    for _, payload in got:
        doc = json.loads(payload)
        assert isinstance(doc["ts"], int)
        assert isinstance(doc["power_w"], float)


async def test_publish_plant_uses_the_given_clock(
    broker: MosquittoBroker, collector: Collector
) -> None:
    ticks = iter(range(1_795_737_600_000, 1_795_737_600_000 + 10**9, 60_000))
    plant = Plant(machines=20, dropouts=False)
    sent = await publish_plant(
        plant, broker.url, interval_s=0.2, duration_s=0.7, clock_ms=lambda: next(ticks)
    )
    got = await asyncio.to_thread(collector.wait_for, sent)
    stamps = sorted({json.loads(p)["ts"] for _, p in got})
    assert stamps[0] == 1_795_737_600_000
    assert all(b - a == 60_000 for a, b in itertools.pairwise(stamps))


async def test_publish_plant_stops_on_cancel(broker: MosquittoBroker) -> None:
    task = asyncio.create_task(publish_plant(Plant(), broker.url, interval_s=0.1))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_publish_plant_survives_a_broker_restart(
    broker: MosquittoBroker, collector: Collector
) -> None:
    plant = Plant(dropouts=False)
    task = asyncio.create_task(publish_plant(plant, broker.url, interval_s=0.2, duration_s=6.0))
    await asyncio.sleep(1.0)
    broker.stop()
    await asyncio.sleep(0.5)
    broker.start()
    restarted_ms = time.time_ns() // 1_000_000
    sent = await task
    assert sent >= 25 * len(plant.machines)
    got = collector.messages
    late = {t for t, p in got if json.loads(p)["ts"] > restarted_ms + 2_500}
    assert late == {m.topic for m in plant.machines}


def test_publish_timeline_waits_for_every_ack(
    broker: MosquittoBroker, collector: Collector
) -> None:
    plant = Plant(machines=100, dropouts=False)
    messages = [msg for s in range(0, 30_000, 1000) for msg in plant.payloads(1_000_000 + s)]
    assert publish_timeline(broker.url, messages) == len(messages) == 3000
    got = collector.wait_for(len(messages))
    assert got == messages  # one publisher, QoS 1: in order, nothing lost


def test_publish_timeline_unreachable_broker() -> None:
    with MosquittoBroker(persistence=False) as b:
        url = b.url
    with pytest.raises(PublishError, match="cannot connect"):
        publish_timeline(url, [("pilot/x/y/telemetry", b"{}")], timeout_s=2)


def test_publish_timeline_rejects_unknown_scheme() -> None:
    with pytest.raises(ValueError, match="mqtt://"):
        publish_timeline("http://127.0.0.1:1", [])


async def test_publish_plant_bounds_its_queue_while_the_broker_is_away() -> None:
    with MosquittoBroker(persistence=False) as b:
        url = b.url
    plant = Plant(dropouts=False)
    with capture_logs() as logs:
        sent = await publish_plant(
            plant, url, interval_s=0.1, duration_s=0.5, max_queued=15, drain_timeout_s=0.2
        )
    assert sent == 15
    events = [e["event"] for e in logs]
    assert events.count("demo.publisher.queue_full") == 1
    (stopped,) = [e for e in logs if e["event"] == "demo.publisher.stopped"]
    assert stopped["published"] == 15
    assert stopped["dropped"] > 0

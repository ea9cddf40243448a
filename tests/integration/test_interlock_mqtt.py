"""The soft interlock on a real Mosquitto, read by a real subscriber: the retained message
flips on at the booking's start and off at its end plus the off-delay, comes back after a
broker restart that lost it, and keeps its seq rising across a gateway restart."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from tests.fakes import T0, Clock
from tests.peers import serving
from tests.sites import machine_config, site_yaml
from tests.waiting import wait_for

from pilotline.demo.broker import MosquittoBroker
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway
from pilotline.gateway.sinks.influx.writer import MemoryWriter
from pilotline.gateway.store import Store
from pilotline.gateway.timefmt import iso
from pilotline.rules.booking import BookingRules, Request, Reservation, Status

pytestmark = pytest.mark.integration

MIN = 60_000
HOUR = 60 * MIN
START = T0 + HOUR
END = START + HOUR
TOPIC = "pilotline/unit/interlock/laser-01"


@pytest.fixture
def broker() -> Iterator[MosquittoBroker]:
    """Without persistence: a restart loses every retained message, so only the gateway's
    publishing again after its reconnect can bring the signal back."""
    with serving(lambda: MosquittoBroker(persistence=False)) as b:
        yield b


class Subscriber:
    """A paho client reading the interlock topics: every message with its retain flag."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.got: list[tuple[dict[str, Any], bool]] = []
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe("pilotline/unit/interlock/#", qos=1)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        assert msg.topic == TOPIC
        with self._lock:
            self.got.append((json.loads(msg.payload), bool(msg.retain)))

    def last(self) -> dict[str, Any] | None:
        with self._lock:
            return self.got[-1][0] if self.got else None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def config_file(tmp_path: Path, broker: MosquittoBroker, name: str, interval_s: float) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        site_yaml(
            {"photonics": [machine_config("laser-01")]},
            mqtt={"url": broker.url, "client_id": "gw-interlock-test", "reconnect_max_s": 1},
            influx=None,
            store=tmp_path / "gw.db",
            defaults={"debounce_s": 0, "stale_after_s": 3600, "interlock": {"off_delay_s": "10m"}},
            interlock={"interval_s": interval_s, "timeout_s": 2},
        )
    )
    return path


def book(store: Store, tenant: str, start: int, end: int, now: int) -> Reservation:
    """A confirmed booking made active (as the lifecycle does once the machine runs)."""
    reservations = store.reservations()
    rules = BookingRules(min_length_ms=15 * MIN, min_notice_ms=0)
    held = reservations.request(
        Request("laser-01", tenant, start, end), rules, [(now - HOUR, now + 24 * HOUR)], now
    ).reservation
    assert held is not None
    confirmed = reservations.confirm(held.id, now, approval=False, by=tenant)
    reservations.settle([(confirmed.id, Status.CONFIRMED, Status.ACTIVE, "running")], now)
    return confirmed


@pytest.fixture
async def subscriber(broker: MosquittoBroker) -> AsyncIterator[Subscriber]:
    sub = Subscriber(broker)
    yield sub
    sub.close()


async def running(gateway: Gateway) -> asyncio.Task[None]:
    return asyncio.create_task(gateway.run(api=False), name="gateway")


async def stopped(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_the_retained_signal_follows_the_booking_and_survives_broker_and_gateway_restarts(
    tmp_path: Path, broker: MosquittoBroker, subscriber: Subscriber
) -> None:
    clock = Clock(T0)
    config = load_config(config_file(tmp_path, broker, "site", interval_s=0.1))
    gateway = Gateway(
        config, writer=MemoryWriter(), clock_ms=clock, monotonic_ms=clock.monotonic,
        collectors=False,
    )
    booked = book(gateway.store, "smallco", START, END, T0)
    task = await running(gateway)
    try:
        off = {"enabled": False, "reservation": None, "tenant": None, "until": None}
        await wait_for(lambda: subscriber.last() == {**off, "seq": 1})

        clock.set(START)
        on = {
            "enabled": True, "reservation": booked.id, "tenant": "smallco",
            "until": iso(END + 10 * MIN), "seq": 2,
        }
        await wait_for(lambda: subscriber.last() == on)
        assert list(subscriber.got[-1][0]) == ["enabled", "reservation", "tenant", "until", "seq"]

        # the broker restarts and forgets every retained message: the gateway publishes the
        # signal again once it is back, and a subscriber that comes later gets it retained
        publisher = gateway.interlock.publisher
        assert publisher is not None
        await wait_for(lambda: publisher.acked == 2)
        broker.stop(kill=True)
        broker.start()
        await wait_for(lambda: publisher.connects == 2 and publisher.acked == 3)
        late = Subscriber(broker)
        try:
            await wait_for(lambda: late.got == [(on, True)])
        finally:
            late.close()

        clock.set(END + 5 * MIN)  # past the end (the booking completed), inside the off-delay
        gateway.bookings.settle()  # as its lifecycle task would within 5 s
        await asyncio.sleep(0.5)
        assert subscriber.last() == on
        assert gateway.store.reservations().get(booked.id).status is Status.COMPLETED  # type: ignore[union-attr]
        clock.set(END + 10 * MIN)
        await wait_for(lambda: subscriber.last() == {**off, "seq": 3})
        health = gateway.health()["interlock"]
        assert health["healthy"] is True
        assert health["machines"]["laser-01"]["seq"] == 3
        assert gateway.metrics.interlock_changes["laser-01"] == 3
    finally:
        await stopped(task)

    # A gateway restarted on the same store goes on from seq 3, and sees a new booking at
    # once: its evaluation interval is a minute, the booking's change is polled for.
    clock.set(END + 30 * MIN)
    again = Gateway(
        load_config(config_file(tmp_path, broker, "slow", interval_s=60)), writer=MemoryWriter(),
        clock_ms=clock, monotonic_ms=clock.monotonic, collectors=False,
    )
    task = await running(again)
    try:
        await wait_for(lambda: len(subscriber.got) >= 5)  # seq 3 announced again at start
        assert subscriber.got[-1] == ({**off, "seq": 3}, False)
        now = clock()
        walk_in = book(again.store, "tinylab", now, now + HOUR, now)
        await wait_for(lambda: subscriber.last() == {
            "enabled": True, "reservation": walk_in.id, "tenant": "tinylab",
            "until": iso(walk_in.end_ms + 10 * MIN), "seq": 4,
        }, timeout_s=3)
    finally:
        await stopped(task)

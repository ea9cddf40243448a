"""Published back on a real Mosquitto, read by a real subscriber (Mosquitto's own
``mosquitto_sub``, a client that shares no code with the gateway): after the machine's
state changes, after a booking takes it, and after a broker restart that lost every retained
message, a subscriber that comes later reads each machine's ``state``, ``capacity`` and
``booking`` retained, as README's "Published back" contract gives them."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.fakes import T0, Clock
from tests.peers import serving
from tests.sites import live_site, machine_config
from tests.waiting import publish_on_time, wait_for

from pilotline.demo.broker import MosquittoBroker, find_mosquitto, free_port
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway
from pilotline.gateway.service.publish_back_mqtt import RetainedPublisher
from pilotline.gateway.timefmt import iso
from pilotline.rules.booking import BookingRules, Request, Status

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        find_mosquitto() is None or shutil.which("mosquitto_sub") is None,
        reason="mosquitto and mosquitto_sub are needed",
    ),
]

MIN = 60_000
HOUR = 60 * MIN
TOPIC = "t/laser-01"
BASE = "uns/unit/photonics/laser-01"


@pytest.fixture
def broker() -> Iterator[MosquittoBroker]:
    """Without persistence: a restart loses every retained message, so only the gateway's
    publishing again after its reconnect can bring them back."""
    with serving(lambda: MosquittoBroker(persistence=False)) as b:
        yield b


async def retained(broker: MosquittoBroker, count: int = 3) -> dict[str, Any]:
    """What a subscriber coming now reads under ``uns/#``: ``count`` messages, each topic's
    kind -> its JSON; every one must carry the retain flag."""
    proc = await asyncio.create_subprocess_exec(
        "mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-t", "uns/#", "-q", "1",
        "-F", "%r %t %p", "-C", str(count), "-W", "10",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    got: dict[str, Any] = {}
    for line in out.decode().splitlines():
        flag, topic, payload = line.split(" ", 2)
        assert flag == "1", f"{topic} was not retained"
        assert topic.startswith(BASE + "/")
        got[topic.removeprefix(BASE + "/")] = json.loads(payload)
    return got


def sample(ts: int, state: str) -> tuple[str, bytes]:
    return TOPIC, json.dumps({"ts": ts, "state": state}).encode()


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
async def gateway(
    tmp_path: Path, broker: MosquittoBroker, clock: Clock
) -> AsyncIterator[Gateway]:
    path = tmp_path / "site.yaml"
    path.write_text(
        live_site(
            {"photonics": [machine_config("laser-01", topic=TOPIC)]},
            mqtt_url=broker.url, client_id=f"gw-uns-{free_port()}", port=free_port(),
            store=tmp_path / "gw.db",
            defaults={"debounce_s": 0, "stale_after_s": 3600, "min_idle_s": 0,
                      "publish_interval_s": 60},
            publish_back={"prefix": "uns", "min_interval_s": 0.2},
        )
    )
    gw = Gateway(load_config(path), clock_ms=clock, monotonic_ms=clock.monotonic)
    task = asyncio.create_task(gw.run(api=False), name="gateway")
    try:
        await wait_for(lambda: gw.health().get("mqtt", {}).get("healthy", False))
        yield gw
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_states_a_booking_and_a_broker_restart_read_back_retained(
    gateway: Gateway, broker: MosquittoBroker, clock: Clock
) -> None:
    assert gateway.publish_back is not None
    publisher = gateway.publish_back.publisher
    assert isinstance(publisher, RetainedPublisher)

    def received() -> int:
        return sum(gateway.metrics.samples.values())

    # the machine is idle, then runs: the state topic follows, capacity says not available
    await publish_on_time(broker.url, [sample(T0, "NotExecuting")], clock, received)
    await wait_for(lambda: gateway.plant.view()[0].state.value == "idle")
    clock.set(T0 + 30_000)
    await publish_on_time(broker.url, [sample(T0 + 30_000, "Executing")], clock, received)
    clock.set(T0 + 33_000)  # lateness (2 s) passed: the plant's clock reaches the sample
    await wait_for(lambda: gateway.plant.view()[0].state.value == "running")
    await wait_for(lambda: gateway.publish_back.published >= 4, timeout_s=5)  # type: ignore[union-attr]
    got = await retained(broker)
    assert got["state"]["state"] == "running"
    assert got["state"]["since"] == iso(T0 + 30_000)
    assert got["capacity"] == {
        "available": False, "offered": False, "reserved": False, "idle_for_s": 0.0,
        "ts": got["capacity"]["ts"],
    }
    assert got["booking"]["reservation"] is None
    assert list(got["booking"]) == ["reservation", "status", "start", "end", "ts"]

    # a booking from now on takes the machine: booking names it (not its tenant), and
    # capacity says reserved
    now = clock() - 2_000
    book = gateway.store.reservations()
    held = book.request(
        Request("laser-01", "smallco", now, now + HOUR),
        BookingRules(min_length_ms=15 * MIN, min_notice_ms=0, step_ms=1_000),
        [(now - HOUR, now + 24 * HOUR)], now,
    ).reservation
    assert held is not None
    confirmed = book.confirm(held.id, now, approval=False, by="smallco")
    book.settle([(confirmed.id, Status.CONFIRMED, Status.ACTIVE, "running")], now)
    clock.advance(1_000)  # the machine's clock moves past the booking's start
    want = {"reservation": held.id, "status": "active", "start": iso(now),
            "end": iso(now + HOUR)}
    for _ in range(20):  # within the booking's look-up (0.5 s) and BookedCapacity's (1 s)
        got = await retained(broker)
        if got["booking"]["status"] == "active" and got["capacity"]["reserved"]:
            break
        await asyncio.sleep(0.25)
    assert {k: got["booking"][k] for k in want} == want
    assert "tenant" not in got["booking"]
    assert "smallco" not in json.dumps(got)
    assert got["capacity"]["reserved"] is True
    assert got["capacity"]["offered"] is False
    assert got["state"]["state"] == "running"

    # the broker restarts and forgets every retained message: the gateway publishes each
    # topic's latest again once it is back, and a later subscriber reads them all
    await wait_for(lambda: publisher.acked >= publisher.sent)
    before = got
    connects = publisher.connects
    broker.stop(kill=True)
    broker.start()
    await wait_for(lambda: publisher.connects == connects + 1, timeout_s=20)
    assert await retained(broker) == before
    health = gateway.health()["publish_back"]
    assert health["healthy"] is True
    assert health["mqtt"]["refused"] == 0

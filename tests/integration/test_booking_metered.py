"""Bookings end to end against real peers (issue 15): tenants book through the gateway's real
HTTP API (uvicorn on a free port, served by ``Gateway.run``), the machines publish through a
real Mosquitto on the test's clock (``publish_on_time``: plant minutes in seconds of wall
time), and each booking follows its machine, read back through ``GET /api/reservations/{id}``
and metered from the store's confirmed states.

The timeline, in minutes after T0; each machine sends its state every 30 s; debounce 0,
stale after 60 s; bookings on a 1 min grid, early grace 1 min, no-show grace 2 min:

- 0: co-a books laser-01 for [5, 15) (A); co-b books mill-02 for [5, 8) (B) and [12, 14) (C).
- 6: laser-01 runs, inside A's grace: A is ``active``. mill-02 stays idle: B is ``no_show``
  once its grace is over (7).
- 9: the broker is killed. The machines go ``offline`` from their last sample (9:00) once
  they are stale; the broker comes back; samples flow again from 11.
- 11:30: the gateway stops. While it is down mill-02 runs from 12:00 to 13:30, inside C's
  grace; the broker keeps those samples for the gateway's session. 14:00: the gateway starts
  again on the same store, C's grace already over: the backlog, not the clock, decides C
  (``completed``, not ``no_show``).
- 16: laser-01 stops, a minute past A's end: A is ``completed`` with 1 min of overrun, and its
  2 min without data are metered ``offline``, not ``running``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.auth import bearer
from tests.fakes import T0, Clock
from tests.sites import live_site, machine_config, pilot_laser
from tests.waiting import publish_on_time, wait_for

from pilotline.demo.broker import MosquittoBroker, find_mosquitto, free_port
from pilotline.demo.publisher import publish_timeline
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway, ServiceOptions
from pilotline.gateway.store.tokens import Role
from pilotline.rules.booking import Status
from pilotline.rules.booking.metering import Usage
from pilotline.rules.states import State

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed"),
]

MIN = 60_000
LASER = "pilot/photonics/laser-01/telemetry"
MILL = "pilot/machining/mill-02/telemetry"
BOOKING = {"step_s": 60, "min_length_s": 60, "early_grace_s": 60, "no_show_grace_s": 120}


def at(minutes: float) -> int:
    return T0 + round(minutes * MIN)


def samples(start: float, stop: float, laser: Callable[[float], str],
            mill: Callable[[float], str]) -> list[tuple[str, bytes]]:
    """Both machines' states every 30 s in ``[start, stop)`` minutes."""
    out = []
    minute = start
    while minute < stop:
        for topic, state in ((LASER, laser(minute)), (MILL, mill(minute))):
            out.append((topic, json.dumps({"ts": at(minute), "state": state}).encode()))
        minute += 0.5
    return out


def laser(minute: float) -> str:
    return "Executing" if 6 <= minute < 16 else "NotExecuting"


def mill(minute: float) -> str:
    return "Executing" if 12 <= minute < 13.5 else "NotExecuting"


@dataclass
class Site:
    """The running gateway (replaced on a restart), its clock and API, and what was sent."""

    path: Path
    clock: Clock
    api: str
    gateway: Gateway | None = None
    task: asyncio.Task[None] | None = None
    received_before: int = 0  # samples counted by gateways stopped since
    published: int = 0

    @property
    def gw(self) -> Gateway:
        assert self.gateway is not None
        return self.gateway

    def received(self) -> int:
        return self.received_before + sum(self.gw.metrics.samples.values())

    async def start(self) -> None:
        self.gateway = Gateway(
            load_config(self.path), clock_ms=self.clock, options=ServiceOptions(lateness_ms=0)
        )
        ready = asyncio.Event()
        self.task = asyncio.create_task(self.gateway.run(ready=ready))
        await asyncio.wait_for(ready.wait(), 15)
        await wait_for(lambda: self.gw.health().get("mqtt", {}).get("healthy", False))

    async def stop(self) -> None:
        assert self.task is not None
        self.received_before = self.received()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.task = None

    async def send(self, messages: list[tuple[str, bytes]]) -> None:
        """Published on time, each second's group received before the next."""
        url = self.gw.config.mqtt.url  # type: ignore[union-attr]
        await publish_on_time(url, messages, self.clock, self.received)
        self.published += len(messages)


@pytest.fixture
async def site(tmp_path: Path, broker: MosquittoBroker) -> AsyncIterator[Site]:
    port = free_port()
    path = tmp_path / "site.yaml"
    path.write_text(
        live_site(
            {
                "photonics": [pilot_laser()],
                "machining": [machine_config("mill-02", "beta-tools", topic=MILL)],
            },
            site="booking-site",
            mqtt_url=broker.url,
            client_id=f"gw-booking-{port}",
            port=port,
            store=tmp_path / "gw.db",
            defaults={"debounce_s": 0, "stale_after_s": 60, "min_idle_s": 60,
                      "publish_interval_s": 60, "offering": "always", "booking": BOOKING},
        )
    )
    running = Site(path, Clock(T0), f"http://127.0.0.1:{port}")
    await running.start()
    try:
        yield running
    finally:
        if running.task is not None:
            await running.stop()


async def book(client: httpx.AsyncClient, headers: dict[str, str], machine: str,
               start: float, end: float) -> str:
    """Held through POST /api/reservations, then confirmed: the reservation's id."""
    made = await client.post("/api/reservations", headers=headers,
                             json={"machine": machine, "start": at(start), "end": at(end)})
    assert made.status_code == 201, made.text
    rid: str = made.json()["id"]
    done = await client.post(f"/api/reservations/{rid}/confirm", headers=headers)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "confirmed"
    return rid


async def status(site: Site, rid: str, headers: dict[str, str]) -> str:
    async with httpx.AsyncClient(base_url=site.api) as client:
        answer = await client.get(f"/api/reservations/{rid}", headers=headers)
    assert answer.status_code == 200, answer.text
    got: str = answer.json()["status"]
    return got


async def becomes(
    site: Site, rid: str, headers: dict[str, str], expected: str, via: tuple[str, ...] = ()
) -> None:
    """Waits (the lifecycle runs every 5 s) until the API shows ``expected``; fails at once
    if it shows a status other than the one it had, ``via`` or ``expected``."""
    first = await status(site, rid, headers)
    seen = first
    for _ in range(200):
        if seen == expected:
            return
        assert seen in (first, *via), f"{rid}: {first} -> {seen}, expected {expected}"
        await asyncio.sleep(0.1)
        seen = await status(site, rid, headers)
    raise AssertionError(f"{rid} still {seen}, expected {expected}")


async def test_bookings_follow_their_machines_through_a_broker_kill_and_a_restart(
    site: Site, broker: MosquittoBroker
) -> None:
    co_a = bearer(site.gw.store, Role.TENANT, "co-a")
    co_b = bearer(site.gw.store, Role.TENANT, "co-b")
    async with httpx.AsyncClient(base_url=site.api) as client:
        a = await book(client, co_a, "laser-01", 5, 15)
        b = await book(client, co_b, "mill-02", 5, 8)
        c = await book(client, co_b, "mill-02", 12, 14)
        # a tenant sees its own bookings only
        assert (await client.get(f"/api/reservations/{b}", headers=co_a)).status_code == 404

    await site.send(samples(0, 6, laser, mill))
    assert await status(site, a, co_a) == "confirmed"
    await site.send(samples(6, 6.5, laser, mill))  # laser-01 runs inside A's grace
    await becomes(site, a, co_a, "active")
    await site.send(samples(6.5, 7.5, laser, mill))  # past B's grace, mill-02 idle
    await becomes(site, b, co_b, "no_show")

    # the broker killed mid-booking: no data from 9:00 until 11:00
    await site.send(samples(7.5, 9.5, laser, mill))
    await asyncio.to_thread(broker.stop, kill=True)
    site.clock.ms = at(10.5)
    await wait_for(lambda: all(v.state is State.OFFLINE for v in site.gw.plant.view()))
    await asyncio.to_thread(broker.start)
    await wait_for(lambda: site.gw.health()["mqtt"]["healthy"], timeout_s=20)
    await site.send(samples(11, 12, laser, mill))
    assert await status(site, a, co_a) == "active"

    # the gateway restarted mid-booking, C's start falling in the gap
    await site.stop()
    url = broker.url
    gap = samples(12, 14.5, laser, mill)
    site.clock.ms = at(14)
    await asyncio.to_thread(publish_timeline, url, gap)  # kept for the gateway's session
    site.published += len(gap)
    await site.start()
    await wait_for(lambda: site.received() == site.published)
    await becomes(site, c, co_b, "completed", via=("active",))
    assert await status(site, a, co_a) == "active"
    await site.send(samples(14.5, 17, laser, mill))  # laser-01 runs a minute past A's end
    await becomes(site, a, co_a, "completed")

    store = site.gw.store.reservations()
    assert [s for s, *_ in store.events(a)] == [
        Status.HELD, Status.CONFIRMED, Status.ACTIVE, Status.COMPLETED
    ]
    assert [s for s, *_ in store.events(b)] == [Status.HELD, Status.CONFIRMED, Status.NO_SHOW]
    assert [s for s, *_ in store.events(c)] == [
        Status.HELD, Status.CONFIRMED, Status.ACTIVE, Status.COMPLETED
    ]
    # nothing lost: every sample sent while the broker was up reached a gateway, and the
    # laser's states are those it sent, with the broker's outage as `offline`
    assert site.received() == site.published
    laser_states = [
        (row["ts_ms"], row["state"]) for row in site.gw.store.state_history(T0, at(17))
        if row["machine"] == "laser-01"
    ]
    assert laser_states == [
        (T0, "idle"), (at(6), "running"), (at(9), "offline"), (at(11), "running"),
        (at(16), "idle"),
    ]
    assert site.gw.bookings.usage(a) == Usage(
        running_ms=7 * MIN, idle_ms=1 * MIN, offline_ms=2 * MIN, overrun_ms=1 * MIN
    )
    # a no-show is metered until it was judged one: its slot was free for others from then
    [judged] = [t for status, t, *_ in store.events(b) if status is Status.NO_SHOW]
    assert site.gw.bookings.usage(b) == Usage(idle_ms=min(judged, at(8)) - at(5))
    assert site.gw.bookings.usage(c) == Usage(running_ms=90_000, idle_ms=30_000)

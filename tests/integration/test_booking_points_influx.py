"""The ``booking`` and ``usage`` measurements (issue 15) reach a real victoria-metrics through
the gateway's durable outbox: moves made through the real HTTP API (uvicorn, ``serve_api``)
and by the bookings' lifecycle each arrive once, with the contract's tags and fields; with
the store killed while bookings move, and the gateway killed before it could send them,
nothing is lost and nothing is written twice.

victoria-metrics keeps numeric fields only (``booking_status_code``, ``usage_running_s``...):
the string field ``reservation`` is checked in tests/gateway/test_booking_points.py."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.auth import bearer
from tests.fakes import Clock
from tests.peers import VictoriaMetrics
from tests.sites import UNIT_DEFAULTS, machine_config, site_yaml

from pilotline.collectors.mqtt.collector import AckToken
from pilotline.demo.broker import free_port
from pilotline.gateway.api.app import serve_api
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway
from pilotline.gateway.sinks.influx.writer import InfluxClientWriter
from pilotline.gateway.store.tokens import Role
from pilotline.rules import Sample
from pilotline.rules.booking import Status

pytestmark = pytest.mark.integration

MIN = 60_000
HOUR = 60 * MIN
# a few hours ago, on the 15 min grid: victoria-metrics exports recent points a bit later
T0 = (int(time.time() * 1000) // HOUR - 4) * HOUR
START = T0 + HOUR
END = START + HOUR
IDLE = {"laser-01": "NotExecuting", "laser-02": "NotExecuting"}
_delivery = iter(range(1, 1_000_000))


def site_file(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(
        site_yaml(
            {"photonics": [
                machine_config("laser-01", "acme", capabilities=["laser-cutting"]),
                machine_config("laser-02", "acme", capabilities=["laser-cutting"]),
            ]},
            site="marseille",
            store=tmp_path / "gw.db",
            api={"listen": f"127.0.0.1:{port}"},
            defaults={**UNIT_DEFAULTS, "offering": "always", "stale_after_s": 7200},
        )
    )
    return path


class Running:
    def __init__(self, gateway: Gateway, url: str, clock: Clock) -> None:
        self.gateway = gateway
        self.url = url
        self.clock = clock
        self.tenant = bearer(gateway.store, Role.TENANT, "smallco")

    def at(self, ts: int, states: dict[str, str]) -> None:
        gateway = self.gateway
        self.clock.set(ts)
        for machine, state in states.items():
            n = next(_delivery)
            gateway.ingest.sample(Sample(machine, ts, {"state": state}), AckToken(1, n, n))
        gateway.tick()
        gateway.commit()
        gateway.bookings.settle()

    async def book(self, machine: str) -> str:
        async with httpx.AsyncClient(base_url=self.url, headers=self.tenant, timeout=10) as api:
            held = await api.post(
                "/api/reservations", json={"machine": machine, "start": START, "end": END}
            )
            assert held.status_code == 201, held.text
            rid: str = held.json()["id"]
            confirmed = await api.post(f"/api/reservations/{rid}/confirm")
            assert confirmed.json()["status"] == "confirmed", confirmed.text
            return rid


@contextlib.asynccontextmanager
async def running(tmp_path: Path, vm: VictoriaMetrics) -> AsyncIterator[Running]:
    """A gateway writing to ``vm``, its API served on a free port; closed without flushing
    its outbox (as a killed one would leave it)."""
    port = free_port()
    clock = Clock(T0)
    gateway = Gateway(
        load_config(site_file(tmp_path, port)),
        writer=InfluxClientWriter(vm.url, "pilot", "pilotline", None, timeout_s=1),
        clock_ms=clock,
        monotonic_ms=clock.monotonic,
    )
    gateway.caught_up = True
    task = asyncio.create_task(serve_api(gateway))
    try:
        for _ in range(100):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                await writer.wait_closed()
                break
            await asyncio.sleep(0.05)
        yield Running(gateway, f"http://127.0.0.1:{port}", clock)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        gateway.store.close()
        assert gateway.writer is not None
        gateway.writer.close()


async def a_used_booking_and_a_no_show(site: Running) -> tuple[str, str]:
    """laser-01 booked and run inside its booking; laser-02 booked and never started."""
    site.at(T0, IDLE)
    used = await site.book("laser-01")
    missed = await site.book("laser-02")
    site.at(START + 5 * MIN, {**IDLE, "laser-01": "Executing"})
    site.at(START + 20 * MIN, {**IDLE, "laser-01": "Executing"})
    site.at(END - 15 * MIN, IDLE)
    site.at(END + MIN, IDLE)
    book = site.gateway.store.reservations()
    assert book.get(used).status is Status.COMPLETED  # type: ignore[union-attr]
    assert book.get(missed).status is Status.NO_SHOW  # type: ignore[union-attr]
    return used, missed


def exported(vm: VictoriaMetrics) -> dict[tuple[str, str, str], dict[str, Any]]:
    """``(series name, machine, status)`` → the exported series of booking and usage."""
    return {
        (s["metric"]["__name__"], s["metric"]["machine"], s["metric"].get("status", "")): s
        for s in vm.export('{__name__=~"(booking|usage)_.+"}')
    }


BOOKING_MOVES = {
    ("laser-01", "held", 1), ("laser-01", "confirmed", 3), ("laser-01", "active", 4),
    ("laser-01", "completed", 5),
    ("laser-02", "held", 1), ("laser-02", "confirmed", 3), ("laser-02", "no_show", 9),
}


def check_points(vm: VictoriaMetrics) -> None:
    """Every move once, stamped at the booking's start, with the contract's tags; the two
    bookings' use."""
    found = exported(vm)
    codes = {
        (machine, status, int(s["values"][0]))
        for (name, machine, status), s in found.items()
        if name == "booking_status_code"
    }
    assert codes == BOOKING_MOVES
    for (name, _, _), s in found.items():
        assert s["timestamps"] == [START], name  # one point each, at the start
    some = found["booking_end_ms", "laser-02", "no_show"]
    assert some["metric"] == {
        "__name__": "booking_end_ms", "site": "marseille", "zone": "photonics",
        "machine": "laser-02", "owner": "acme", "tenant": "smallco", "status": "no_show",
    }
    assert some["values"] == [END]
    assert found["booking_start_ms", "laser-01", "completed"]["values"] == [START]
    usage = {
        (name, machine): s["values"][0]
        for (name, machine, _), s in found.items()
        if name.startswith("usage_")
    }
    assert usage == {
        ("usage_booked_s", "laser-01"): 3600, ("usage_running_s", "laser-01"): 2400,
        ("usage_idle_s", "laser-01"): 1200, ("usage_down_s", "laser-01"): 0,
        ("usage_offline_s", "laser-01"): 0, ("usage_overrun_s", "laser-01"): 0,
        ("usage_charge", "laser-01"): 0, ("usage_no_show", "laser-01"): 0,
        ("usage_booked_s", "laser-02"): 3600, ("usage_running_s", "laser-02"): 0,
        ("usage_idle_s", "laser-02"): 1200, ("usage_down_s", "laser-02"): 0,
        ("usage_offline_s", "laser-02"): 0, ("usage_overrun_s", "laser-02"): 0,
        ("usage_charge", "laser-02"): 0, ("usage_no_show", "laser-02"): 1,
    }
    assert found["usage_running_s", "laser-01", ""]["metric"] == {
        "__name__": "usage_running_s", "site": "marseille", "zone": "photonics",
        "machine": "laser-01", "owner": "acme", "tenant": "smallco",
    }


async def test_moves_through_the_api_and_the_lifecycle_arrive_once_each(
    tmp_path: Path, vm: VictoriaMetrics
) -> None:
    async with running(tmp_path, vm) as site:
        await a_used_booking_and_a_no_show(site)
        gateway = site.gateway
        assert gateway.booking_points.flush() == 7
        assert gateway.booking_points.flush() == 0
        assert gateway.drainer is not None
        assert await gateway.drainer.flush(10)
    check_points(vm)


async def test_nothing_is_lost_while_the_store_is_down_and_the_gateway_killed(
    tmp_path: Path, vm: VictoriaMetrics
) -> None:
    vm.stop(kill=True)
    async with running(tmp_path, vm) as site:
        gateway = site.gateway
        assert gateway.drainer is not None
        tasks = [
            asyncio.create_task(gateway.drainer.run()),
            asyncio.create_task(gateway.booking_points.run(interval_s=0.05)),
        ]
        await a_used_booking_and_a_no_show(site)
        await asyncio.sleep(0.5)  # both loops turn; every write fails
        stats = gateway.drainer.stats()
        assert stats.last_error is not None
        assert stats.written == 0
        assert stats.depth > 0
        assert gateway.booking_points.flush() == 0  # the loop wrote them to the outbox
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # killed here: the outbox is not flushed (closing the store is all that happens)
    vm.start()
    restarted = Gateway(
        load_config(tmp_path / "site.yaml"),
        writer=InfluxClientWriter(vm.url, "pilot", "pilotline", None, timeout_s=2),
        clock_ms=Clock(END + 2 * MIN),
    )
    try:
        assert restarted.booking_points.flush() == 0  # nothing written twice
        assert restarted.drainer is not None
        assert await restarted.drainer.flush(10)
    finally:
        restarted.store.close()
        assert restarted.writer is not None
        restarted.writer.close()
    check_points(vm)

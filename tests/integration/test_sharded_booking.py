"""Booking on a sharded site through two real servers (issue 15): the two gateways of one
site, cut with ``--shard 1/2`` and ``2/2`` from files that differ only by their API port,
each serving its uvicorn server on a free port (``serve_api``, as ``Gateway.run`` serves
it). A reservation POSTed to the gateway that does not keep the machine gets 421 with the
owner's URL in ``Location``; the same request sent there gets 201.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from tests.auth import bearer
from tests.sites import machine_config, site_yaml

from pilotline.demo.broker import free_port
from pilotline.gateway.api.app import serve_api
from pilotline.gateway.config import load_config
from pilotline.gateway.config.sharding import restrict
from pilotline.gateway.service import Gateway
from pilotline.gateway.shard import Shard, shard_of
from pilotline.gateway.store.tokens import Role

pytestmark = pytest.mark.integration

HOUR = 3_600_000
MACHINES = [f"m-{i:02d}" for i in range(6)]


async def wait_listening(port: int) -> None:
    for _ in range(100):
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"nothing listens on port {port}")


@contextlib.asynccontextmanager
async def two_shards(tmp_path: Path) -> AsyncIterator[list[tuple[Gateway, str]]]:
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    gateways, tasks = [], []
    try:
        for k, port in enumerate(ports, 1):
            path = tmp_path / f"site-{k}.yaml"
            path.write_text(site_yaml(
                {"z": [machine_config(m, offering="always") for m in MACHINES]},
                store=tmp_path / "gw.db",  # the same in both: each shard derives its own
                api={"listen": f"127.0.0.1:{port}", "shard_urls": urls},
            ))
            gateway = Gateway(restrict(load_config(path), Shard(k, 2)))
            gateways.append(gateway)
            tasks.append(asyncio.create_task(serve_api(gateway)))
            await wait_listening(port)
        yield list(zip(gateways, urls, strict=True))
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for gateway in gateways:
            gateway.store.close()


async def test_a_reservation_sent_to_the_wrong_gateway_is_sent_on(tmp_path: Path) -> None:
    machine = next(m for m in MACHINES if shard_of(m, 2) == 2)
    async with two_shards(tmp_path) as [(one, url_1), (two, url_2)]:
        assert one.config.store != two.config.store
        start = (int(time.time() * 1000) // HOUR + 24) * HOUR  # a day ahead, on the grid
        body = {"machine": machine, "start": start, "end": start + HOUR}
        key = {"Idempotency-Key": "order-4711"}
        async with httpx.AsyncClient(timeout=10) as client:
            wrong = await client.post(
                f"{url_1}/api/reservations", json=body,
                headers={**bearer(one.store, Role.TENANT, "smallco"), **key},
            )
            assert wrong.status_code == 421, wrong.text
            assert wrong.headers["content-type"] == "application/problem+json"
            assert wrong.headers["location"] == f"{url_2}/api/reservations"
            assert (wrong.json()["machine"], wrong.json()["shard"]) == (machine, "2/2")

            # the same request where it says (tokens live in each shard's store)
            tenant_2 = {**bearer(two.store, Role.TENANT, "smallco"), **key}
            there = await client.post(wrong.headers["location"], json=body, headers=tenant_2)
            assert there.status_code == 201, there.text
            assert there.json()["machine"] == machine
            again = await client.post(wrong.headers["location"], json=body, headers=tenant_2)
            assert (again.status_code, again.json()["id"]) == (200, there.json()["id"])
        assert one.store.reservations().list() == []
        assert [r.machine for r in two.store.reservations().list()] == [machine]

"""No double booking through the real API (issue 15): 100 concurrent ``POST /api/reservations``
for overlapping slots of one machine, each on its own connection to the gateway's uvicorn
server on a free port (``serve_api``, as ``Gateway.run`` serves it), give exactly one 201
and 99 409s, and the store holds one live reservation."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from tests.auth import bearer
from tests.sites import machine_config, site_yaml

from pilotline.demo.broker import free_port
from pilotline.gateway.api.app import serve_api
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway
from pilotline.gateway.store.tokens import Role
from pilotline.rules.booking import LIVE

pytestmark = pytest.mark.integration

HOUR = 3_600_000
QUARTER = HOUR // 4
REQUESTS = 100


@contextlib.asynccontextmanager
async def serving(tmp_path: Path) -> AsyncIterator[tuple[Gateway, str]]:
    port = free_port()
    path = tmp_path / "site.yaml"
    path.write_text(
        site_yaml(
            {"z": [machine_config("laser-01", offering="always")]},
            store=tmp_path / "gw.db",
            # 100 clients on one address: more than the default share of 32 per client
            api={"listen": f"127.0.0.1:{port}", "max_connections_per_client": 256},
        )
    )
    gateway = Gateway(load_config(path))
    task = asyncio.create_task(serve_api(gateway))
    try:
        for _ in range(100):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                await writer.wait_closed()
                break
            await asyncio.sleep(0.05)
        yield gateway, f"http://127.0.0.1:{port}"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        gateway.store.close()


async def test_100_concurrent_requests_for_one_slot_book_it_once(tmp_path: Path) -> None:
    async with serving(tmp_path) as (gateway, url):
        tenants = [bearer(gateway.store, Role.TENANT, f"co-{i % 10}") for i in range(REQUESTS)]
        # on the 15 min grid, a day ahead; every request covers [base + 45 min, base + 4 h)
        base = (int(time.time() * 1000) // HOUR + 24) * HOUR

        async def book(i: int) -> httpx.Response:
            start = base + (i % 4) * QUARTER
            # one client each: a connection of its own, all sent at once
            async with httpx.AsyncClient(timeout=30) as client:
                return await client.post(
                    f"{url}/api/reservations", headers=tenants[i],
                    json={"machine": "laser-01", "start": start, "end": start + 4 * HOUR},
                )

        answers = await asyncio.gather(*(book(i) for i in range(REQUESTS)))
        codes = Counter(a.status_code for a in answers)
        assert codes == {201: 1, 409: REQUESTS - 1}, codes
        won = next(a.json() for a in answers if a.status_code == 201)
        for lost in (a for a in answers if a.status_code == 409):
            assert lost.headers["content-type"] == "application/problem+json"
            assert lost.json()["conflicts"]
        live = [r for r in gateway.store.reservations().list(machine="laser-01")
                if r.status in LIVE]
        assert [r.id for r in live] == [won["id"]]

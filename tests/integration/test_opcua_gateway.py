"""OPC UA machines through the whole gateway: states from a real asyncua server in another
process, `offline` while it is down, back by themselves after its restart."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from tests.auth import bearer
from tests.peers import DemoServer, free_port
from tests.sites import demo_opcua, machine_config, site_yaml

from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway, ServiceOptions
from pilotline.rules import State

pytestmark = pytest.mark.integration

MACHINES = {"laser-cut-01": "machinery", "bonder-01": "packml", "laser-mark-01": "mtconnect"}


def site(endpoint: str, store: Path, port: int) -> str:
    machines = [
        machine_config(m, "acme-optics", capabilities=["laser-cutting"],
                       opcua=demo_opcua(endpoint, m, model))
        for m, model in MACHINES.items()
    ]
    return site_yaml(
        {"photonics": machines},
        site="opcua-test",
        mqtt=None,
        influx=None,
        store=store,
        api=f"127.0.0.1:{port}",
        defaults={"debounce_s": 0, "stale_after_s": 3, "min_idle_s": 1, "publish_interval_s": 60},
    )


async def until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.05)


def states(gateway: Gateway) -> dict[str, State]:
    return {v.id: v.state for v in gateway.plant.view()}


async def test_opcua_machines_survive_a_server_restart(tmp_path: Path) -> None:
    server = DemoServer().start()
    port = free_port()
    path = tmp_path / "site.yaml"
    path.write_text(site(server.endpoint, tmp_path / "gw.db", port))
    gateway = Gateway(load_config(path), options=ServiceOptions(lateness_ms=0))
    task = asyncio.create_task(gateway.run())
    try:
        await until(lambda: State.OFFLINE not in states(gateway).values())
        assert set(states(gateway).values()) <= {
            State.RUNNING, State.IDLE, State.DOWN, State.MAINTENANCE
        }
        auth = bearer(gateway.store)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=auth) as client:
            health = (await client.get("/health")).json()
            assert health[f"opcua:{server.endpoint}"]["connected"] is True

            server.kill()
            # no data and no heartbeat: every machine goes offline through staleness
            await until(lambda: set(states(gateway).values()) == {State.OFFLINE})
            answer = await client.get("/health")
            assert answer.status_code == 503
            why = answer.json()[f"opcua:{server.endpoint}"]["why"]
            assert server.endpoint in why
            assert "unreachable" in why

            server.start()  # same port: the collector must come back with no help
            await until(lambda: State.OFFLINE not in states(gateway).values(), timeout_s=40)
            body = (await client.get("/health")).json()[f"opcua:{server.endpoint}"]
            assert body["connected"] is True
            assert body["reconnects"] >= 1
            metrics = (await client.get("/metrics")).text
            assert f'pilotline_collector_connected{{collector="opcua:{server.endpoint}"}} 1.0' in (
                metrics
            )
        changes = [m for m in gateway.store.machines() if m["machine"] == "laser-cut-01"]
        assert changes
        assert changes[0]["state"] != "offline"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        server.kill()

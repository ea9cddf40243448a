"""Sparkplug machines through the whole gateway: a Tahu edge node (its node a laser, its
device a press) born, running, then dead: both machines ``offline`` from the death's receive
time, long before ``stale_after_s`` would have said so; the host in ``/health``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from tests.auth import bearer
from tests.peers import free_port
from tests.sites import site_yaml
from tests.sparkplug_edge import (
    D,
    Edge,
    G,
    N,
    edges_fixture,  # noqa: F401 (the fixture `edges`)
    start_edge,
)

from pilotline.demo.broker import MosquittoBroker
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway, ServiceOptions
from pilotline.rules import State

pytestmark = pytest.mark.integration


def site(broker_url: str, store: Path, port: int) -> str:
    def machine(mid: str, device: str | None, metrics: dict[str, str]) -> dict[str, object]:
        source: dict[str, object] = {"group": G, "node": N, "metrics": metrics}
        if device is not None:
            source["device"] = device
        return {"id": mid, "owner": "acme", "sparkplug": source, "state": {"signal": "state"},
                "offering": "always"}

    return site_yaml(
        {"hall": [
            machine("laser-01", None, {"state": "Status/State", "power_w": "Power"}),
            machine("press-07", D, {"state": "State", "count": "Count"}),
        ]},
        site="sparkplug-test",
        mqtt={"url": broker_url, "reconnect_max_s": 1},
        sparkplug={"mode": "primary", "host_id": "pilotline-gw", "heartbeat_s": 1},
        influx=None,
        store=store,
        api=f"127.0.0.1:{port}",
        defaults={"debounce_s": 0, "stale_after_s": 600, "min_idle_s": 0,
                  "publish_interval_s": 60},
    )


async def until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.05)


def states(gateway: Gateway) -> dict[str, State]:
    return {v.id: v.state for v in gateway.plant.view()}


async def test_sparkplug_machines_through_the_gateway(
    tmp_path: Path, broker: MosquittoBroker, edges: list[Edge]
) -> None:
    port = free_port()
    path = tmp_path / "site.yaml"
    path.write_text(site(broker.url, tmp_path / "gw.db", port))
    gateway = Gateway(load_config(path), options=ServiceOptions(lateness_ms=0))
    task = asyncio.create_task(gateway.run())
    try:
        await until(lambda: gateway.sparkplug is not None and gateway.sparkplug.connected)
        edge = await start_edge(broker, edges)
        await until(lambda: states(gateway) == {"laser-01": State.IDLE, "press-07": State.IDLE})
        await edge.send("ndata", metrics=[{"alias": 1, "type": "String", "value": "Executing"}])
        await until(lambda: states(gateway)["laser-01"] is State.RUNNING)
        auth = bearer(gateway.store)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=auth) as client:
            body = (await client.get("/health")).json()["sparkplug"]
            assert body["healthy"] is True
            assert body["nodes"] == {f"{G}/{N}": {"born": True, "bd_seq": 0}}

        before = int(time.time() * 1000)
        await edge.send("stop")  # NDEATH
        await until(lambda: set(states(gateway).values()) == {State.OFFLINE}, timeout_s=10)
        after = int(time.time() * 1000)
        for view in gateway.plant.view():
            assert view.since_ms is not None
            assert before <= view.since_ms <= after, view
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

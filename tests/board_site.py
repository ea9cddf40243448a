"""A real gateway for the board's browser tests: real Mosquitto, simulated machines that
publish their state over MQTT every half second (``Plant.set`` changes one), the gateway's own
uvicorn server on a free port, and tokens for an operator, two owners and two tenants.

    async with board_site(tmp_path, broker) as site:
        page = await browser.new_page(base_url=site.url)
        await sign_in(page, site.tokens["smallco"])
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from tests.sites import machine_config, site_yaml

from pilotline.demo.broker import MosquittoBroker, free_port
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway
from pilotline.gateway.store.tokens import Role

__all__ = ["MACHINES", "BoardSite", "Plant", "board_site", "sign_in"]

MACHINES: Mapping[str, tuple[str, str, list[str]]] = {
    # id: (zone, owner, capabilities)
    "laser-01": ("photonics", "acme", ["laser-cutting"]),
    "laser-02": ("photonics", "acme", ["laser-cutting"]),
    "cam-01": ("imaging", "lumen", ["optical-inspection"]),
    "coater-01": ("photonics", "lumen", ["coating"]),
}
STATES = {"running": "Executing", "idle": "NotExecuting", "down": "OutOfService",
          "maintenance": "Resetting"}  # the default state map (rules/states.py)


class Plant:
    """The simulated machines: each publishes its state every 0.5 s, stamped now."""

    def __init__(self, port: int, states: Mapping[str, str]) -> None:
        self.states = dict(states)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="board-plant")
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def set(self, machine: str, state: str) -> None:
        """``state``: running, idle, down or maintenance."""
        self.states[machine] = state

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            ts = int(time.time() * 1000)
            for machine, state in list(self.states.items()):
                payload = json.dumps({"ts": ts, "state": STATES[state]})
                self.client.publish(f"plant/{machine}", payload, qos=1)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.client.loop_stop()
        self.client.disconnect()


@dataclass
class BoardSite:
    gateway: Gateway
    url: str
    plant: Plant
    tokens: dict[str, str] = field(default_factory=dict)
    """``operator``, ``acme`` and ``lumen`` (owners), ``smallco`` and ``bigco`` (tenants)."""


@contextlib.asynccontextmanager
async def board_site(
    tmp_path: Path, broker: MosquittoBroker, *, states: Mapping[str, str] | None = None,
    owners: Mapping[str, object] | None = None, booking: Mapping[str, object] | None = None,
    alerts: Mapping[str, object] | None = None,
) -> AsyncIterator[BoardSite]:
    """The gateway running (``Gateway.run``) until the block ends; every machine reported
    (idle unless ``states`` says otherwise) before it is yielded."""
    port = free_port()
    path = tmp_path / "site.yaml"
    zones: dict[str, list[dict[str, object]]] = {}
    for machine, (zone, owner, capabilities) in MACHINES.items():
        zones.setdefault(zone, []).append(
            machine_config(machine, owner, topic=f"plant/{machine}", capabilities=capabilities)
        )
    path.write_text(site_yaml(
        zones,
        site="board-site",
        mqtt={"url": broker.url, "client_id": "board-gw", "reconnect_max_s": 1},
        influx=None,
        store=tmp_path / "gw.db",
        timezone="Europe/Paris",
        defaults={"debounce_s": 0, "stale_after_s": 5, "min_idle_s": 1,
                  "publish_interval_s": 5, "offering": "always",
                  "booking": dict(booking or {"step_s": "15m", "min_notice_s": 0})},
        owners=dict(owners or {"acme": {"show_to_tenants": True}, "lumen": {}}),
        api={"listen": f"127.0.0.1:{port}"},
        alerts=alerts,
    ))
    gateway = Gateway(load_config(path))
    tokens = {
        "operator": (Role.OPERATOR, None), "acme": (Role.OWNER, "acme"),
        "lumen": (Role.OWNER, "lumen"), "smallco": (Role.TENANT, "smallco"),
        "bigco": (Role.TENANT, "bigco"),
    }
    made = {name: gateway.store.tokens().create(name, role, subject, now_ms=0)
            for name, (role, subject) in tokens.items()}
    plant = Plant(broker.port, states or dict.fromkeys(MACHINES, "idle"))
    task = asyncio.create_task(gateway.run())
    try:
        async with asyncio.timeout(30):
            while len({v.id for v in gateway.plant.view() if v.since_ms is not None}) < len(
                MACHINES
            ):
                await asyncio.sleep(0.1)
        yield BoardSite(gateway, f"http://127.0.0.1:{port}", plant, made)
    finally:
        plant.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def sign_in(page: object, token: str) -> None:
    """Sign ``page`` (a Playwright page with the site's base URL) in with ``token``."""
    from playwright.async_api import Page

    assert isinstance(page, Page)
    await page.goto("/board/sign-in")
    await page.get_by_label("API token").fill(token)
    async with page.expect_navigation():
        await page.get_by_role("button", name="Sign in").click()
    assert "/board/sign-in" not in page.url, await page.content()

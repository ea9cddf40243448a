"""``/metrics`` of a running gateway, scraped over HTTP as Prometheus does.

A gateway serves its API (uvicorn) in the test's loop, reads a real Mosquitto and writes to
an InfluxDB address where nothing listens (so lines wait in its outbox), on a clock the test
sets. Each scrape is parsed with prometheus_client's parser: the process's and Python's
families are there, the build info, each machine's state code follows its samples, its
last-seen age the clock, the request histogram counts exactly the requests made (by route
template, never the raw path), the signals dropped and the outbox's bytes are those the
collector and the store hold, and every family is in docs/metrics.md's table.
"""

from __future__ import annotations

import asyncio
import json
import platform
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from tests.auth import bearer
from tests.exposition import Key, drift, samples
from tests.fakes import T0, Clock
from tests.sites import CAMERA_TOPIC, LASER_TOPIC, pilot_camera, pilot_laser, site_yaml
from tests.waiting import publish_on_time, wait_for

from pilotline.demo.broker import MosquittoBroker, free_port
from pilotline.gateway import __version__
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway, ServiceOptions

pytestmark = pytest.mark.integration

MAX_SIGNALS = 3
OUTBOX_MAX_BYTES = 2 * 1024**2
DURATION = "pilotline_api_request_duration_seconds"


@dataclass
class Scraper:
    gateway: Gateway
    clock: Clock
    client: httpx.AsyncClient
    scrapes: int = 0  # /metrics requests made so far (each counted once it is answered)
    text: str = field(default="", repr=False)

    async def scrape(self) -> dict[Key, float]:
        response = await self.client.get("/metrics")
        self.scrapes += 1
        assert response.status_code == 200, response.text
        self.text = response.text
        return samples(self.text)

    async def state_code(self, machine: str, zone: str) -> float | None:
        key = ("pilotline_machine_state_code", (("machine", machine), ("zone", zone)))
        return (await self.scrape()).get(key)

    async def wait_state(self, machine: str, zone: str, code: int) -> None:
        async with asyncio.timeout(10):
            while await self.state_code(machine, zone) != code:
                await asyncio.sleep(0.05)


@pytest.fixture
async def running(tmp_path: Path, broker: MosquittoBroker) -> AsyncIterator[Scraper]:
    port = free_port()
    path = tmp_path / "site.yaml"
    path.write_text(
        site_yaml(
            {"photonics": [pilot_laser()], "imaging": [pilot_camera()]},
            site="metrics",
            mqtt={
                "url": broker.url,
                "client_id": f"gw-metrics-{port}",
                "reconnect_max_s": 1,
                "max_signals": MAX_SIGNALS,
            },
            influx={
                # nothing listens there: InfluxDB away, every line waits in the outbox
                "url": f"http://127.0.0.1:{free_port()}",
                "org": "pilot",
                "bucket": "pilotline",
                "flush_interval_s": 0.1,
                "outbox_max_bytes": OUTBOX_MAX_BYTES,
            },
            api=f"127.0.0.1:{port}",
            store=tmp_path / "gw.db",
            defaults={"debounce_s": 2, "stale_after_s": 60, "min_idle_s": 5,
                      "publish_interval_s": 30, "offering": "always"},
        )
    )
    clock = Clock(T0)
    # a short stop: the outbox cannot be flushed to an InfluxDB that is not there
    options = ServiceOptions(lateness_ms=0, stop_timeout_s=0.5)
    gateway = Gateway(load_config(path), clock_ms=clock, options=options)
    task = asyncio.create_task(gateway.run())
    try:
        await wait_for(lambda: gateway.health().get("mqtt", {}).get("healthy", False))
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers=bearer(gateway.store), timeout=5
        ) as client:
            yield Scraper(gateway, clock, client)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def minute(seconds: range, laser: str, power_w: float) -> list[tuple[str, bytes]]:
    """Both machines, once a second; the laser's payloads carry two signals more than
    ``MAX_SIGNALS`` allows beside its state."""
    messages = []
    for s in seconds:
        ts = T0 + s * 1000
        extra = {f"s{i}": float(i) for i in range(MAX_SIGNALS + 1)}
        messages.append((LASER_TOPIC, json.dumps({"ts": ts, "state": laser, **extra}).encode()))
        messages.append((CAMERA_TOPIC, json.dumps({"ts": ts, "power_w": power_w}).encode()))
    return messages


async def publish(scraper: Scraper, messages: list[tuple[str, bytes]]) -> None:
    gateway = scraper.gateway
    url = gateway.config.mqtt.url  # type: ignore[union-attr]
    received = lambda: sum(gateway.metrics.samples.values())  # noqa: E731
    await publish_on_time(url, messages, scraper.clock, received)


async def test_process_and_build_families_are_scraped(running: Scraper) -> None:
    metrics = await running.scrape()
    build = (("python", platform.python_version()), ("version", __version__))
    assert metrics[("pilotline_build_info", build)] == 1
    assert metrics[("process_resident_memory_bytes", ())] > 10 * 1024**2
    assert metrics[("process_cpu_seconds_total", ())] > 0
    # the store, the broker's and the API's sockets at least
    assert 3 <= metrics[("process_open_fds", ())] <= metrics[("process_max_fds", ())]
    assert metrics[("process_start_time_seconds", ())] > 0
    python = [labels for name, labels in metrics if name == "python_info"]
    assert dict(python[0])["version"] == platform.python_version()
    assert metrics[("pilotline_outbox_max_bytes", ())] == OUTBOX_MAX_BYTES
    assert metrics[("pilotline_outbox_max_points", ())] == 5_000_000  # the default


async def test_machine_state_and_last_seen_age_follow_the_samples(running: Scraper) -> None:
    laser, cam = ("laser-01", "photonics"), ("cam-02", "imaging")
    metrics = await running.scrape()
    assert await running.state_code(*laser) == 0  # offline: nothing heard yet
    assert await running.state_code(*cam) == 0
    assert not [k for k in metrics if k[0] == "pilotline_machine_last_seen_age_seconds"]

    await publish(running, minute(range(5), "Executing", 300.0))
    await running.wait_state(*laser, 1)  # running
    await running.wait_state(*cam, 1)
    await publish(running, minute(range(5, 10), "NotExecuting", 10.0))
    await running.wait_state(*laser, 2)  # idle
    await running.wait_state(*cam, 2)

    # the latest samples were stamped T0 + 9 s; 7 s later on the gateway's clock:
    running.clock.ms = T0 + 16_000
    metrics = await running.scrape()
    for machine in ("laser-01", "cam-02"):
        age = ("pilotline_machine_last_seen_age_seconds", (("machine", machine),))
        assert metrics[age] == 7.0

    # two of the laser's payload keys beyond max_signals, in each of its ten samples
    dropped = ("pilotline_signals_dropped_total", (("machine", "laser-01"),))
    assert metrics[dropped] == 20
    assert ("pilotline_signals_dropped_total", (("machine", "cam-02"),)) not in metrics

    # InfluxDB is away: the lines wait, and /metrics shows the bytes the store holds
    store = running.gateway.store
    await wait_for(lambda: not len(running.gateway.staged))
    metrics = await running.scrape()
    assert metrics[("pilotline_outbox_bytes", ())] == store.outbox_bytes() > 0
    assert metrics[("pilotline_outbox_depth", ())] == store.outbox_depth() > 0
    assert drift(running.text) == []


def count(metrics: dict[Key, float], route: str, method: str, status: str) -> float | None:
    labels = (("method", method), ("route", route), ("status", status))
    return metrics.get((f"{DURATION}_count", labels))


async def test_request_durations_count_each_request_by_route_template(running: Scraper) -> None:
    client = running.client
    for _ in range(3):
        assert (await client.get("/api/machines")).status_code == 200
    assert (await client.delete("/api/silences/no-such-silence")).status_code == 404
    assert (await client.get("/api/machines", headers={"Authorization": ""})).status_code == 401
    assert (await client.get("/no/such/path")).status_code == 404
    assert (await client.request("BREW", "/api/machines")).status_code == 405

    metrics = await running.scrape()
    assert count(metrics, "/api/machines", "GET", "200") == 3
    assert count(metrics, "/api/silences/{silence_id}", "DELETE", "404") == 1
    assert count(metrics, "/api/machines", "GET", "401") == 1
    assert count(metrics, "unmatched", "GET", "404") == 1
    assert count(metrics, "/api/machines", "other", "405") == 1
    assert count(metrics, "/metrics", "GET", "200") is None  # this scrape is not over yet
    routes = {dict(labels)["route"] for name, labels in metrics if name.startswith(DURATION)}
    assert routes == {"/api/machines", "/api/silences/{silence_id}", "unmatched"}

    metrics = await running.scrape()
    assert count(metrics, "/metrics", "GET", "200") == 1
    labels = (("method", "GET"), ("route", "/api/machines"), ("status", "200"))
    buckets = sorted(
        (float(dict(k[1])["le"]), v)
        for k, v in metrics.items()
        if k[0] == f"{DURATION}_bucket" and tuple(p for p in k[1] if p[0] != "le") == labels
    )
    assert buckets[-1] == (float("inf"), 3)  # +Inf holds them all
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
    assert 0 < metrics[(f"{DURATION}_sum", labels)] < 3 * 5.0
    assert drift(running.text) == []

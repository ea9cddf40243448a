"""Each key of the ``api:`` section, through the real uvicorn server on a free port.

The gateway's API is served in-process (``serve_api``, as ``Gateway.run`` does) for a site
whose collectors never run; raw sockets from chosen loopback addresses play the clients.
The defaults, through the real console script: test_api_server.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs
from tests.auth import bearer
from tests.sites import machine_config, site_yaml

from pilotline.demo.broker import free_port
from pilotline.gateway.api.app import serve_api
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway

pytestmark = pytest.mark.integration

class Served:
    def __init__(self, gateway: Gateway, port: int) -> None:
        self.gateway = gateway
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.auth = bearer(gateway.store)
        self.writers: list[asyncio.StreamWriter] = []

    async def get(self, path: str, **headers: str) -> httpx.Response:
        async with httpx.AsyncClient(timeout=3) as client:
            return await client.get(f"{self.url}{path}", headers={**self.auth, **headers})

    async def connect(
        self, source: str = "127.0.0.1"
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A raw connection from ``source``, closed when the server stops."""
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", self.port, local_addr=(source, 0)
        )
        self.writers.append(writer)
        return reader, writer

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, api: dict[str, Any]) -> AsyncIterator[Served]:
    port = free_port()
    path = tmp_path / "site.yaml"
    path.write_text(
        site_yaml(
            {"z": [machine_config("m-1")]},
            store=tmp_path / "gw.db",
            api={"listen": f"127.0.0.1:{port}", **api},
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
        served = Served(gateway, port)
        try:
            yield served
        finally:
            await served.close()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        gateway.store.close()


async def closed_within(reader: asyncio.StreamReader, timeout_s: float) -> bool:
    """Whether the server closes the connection within ``timeout_s`` (EOF or reset)."""
    try:
        while await asyncio.wait_for(reader.read(1024), timeout_s):
            pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


async def test_a_trusted_proxy_forwards_the_client_and_has_no_share(tmp_path: Path) -> None:
    api = {"trusted_proxies": ["127.0.0.1"], "max_connections_per_client": 2}
    async with serving(tmp_path, api) as served:
        held = [await served.connect() for _ in range(3)]  # all from the proxy: all kept
        with capture_logs() as logs:
            answer = await served.get("/api/machines", **{"X-Forwarded-For": "203.0.113.9"})
        assert answer.status_code == 200
        assert [e["client"] for e in logs if e["event"] == "api.access"] == ["203.0.113.9"]
        assert not any([await closed_within(r, 0.2) for r, _ in held])


async def test_forwarded_headers_from_anyone_else_are_ignored(tmp_path: Path) -> None:
    async with serving(tmp_path, {"trusted_proxies": ["10.9.9.9"]}) as served:
        with capture_logs() as logs:
            await served.get("/api/machines", **{"X-Forwarded-For": "203.0.113.9"})
        assert [e["client"] for e in logs if e["event"] == "api.access"] == ["127.0.0.1"]


async def test_allowed_hosts_replace_the_defaults(tmp_path: Path) -> None:
    async with serving(tmp_path, {"allowed_hosts": ["gw.example", "*.plant.example"]}) as served:
        assert (await served.get("/api/machines", Host="gw.example")).status_code == 200
        assert (await served.get("/api/machines", Host="a.plant.example:80")).status_code == 200
        with capture_logs() as logs:
            refused = await served.get("/api/machines", Host="localhost")
        assert refused.status_code == 400
        assert [e["event"] for e in logs] == ["api.host_refused"]
        assert served.gateway.metrics.auth_failures["host"] == 1


async def test_request_and_keep_alive_timeouts(tmp_path: Path) -> None:
    async with serving(tmp_path, {"request_timeout_s": 0.5, "keep_alive_s": 1}) as served:
        reader, writer = await served.connect()
        started = time.monotonic()
        assert await closed_within(reader, 3)
        assert 0.4 < time.monotonic() - started < 2
        # a complete request is answered; the connection then lives keep_alive_s idle
        reader, writer = await served.connect()
        writer.write(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 503")
        assert not await closed_within(reader, 0.7)  # past request_timeout_s: kept alive
        assert await closed_within(reader, 1.5)
        assert served.gateway.metrics.api_connections_closed["request_timeout"] == 1


async def test_the_share_and_the_total(tmp_path: Path) -> None:
    api = {"max_connections": 4, "max_connections_per_client": 2}
    async with serving(tmp_path, api) as served:
        with capture_logs() as logs:
            a = [await served.connect("127.0.0.2") for _ in range(3)]
            assert await closed_within(a[2][0], 1)  # over its share: closed at once
            b = [await served.connect("127.0.0.3") for _ in range(2)]  # 4 held: the total
            # a newcomer with a request evicts the oldest waiting connection
            assert (await served.get("/api/machines")).status_code == 200
            assert await closed_within(a[0][0], 1)
            assert not any([await closed_within(r, 0.1) for r, _ in (a[1], *b)])
        closed = served.gateway.metrics.api_connections_closed
        assert closed == {"per_client": 1, "evicted": 1}
        events = [(e["event"], e["reason"]) for e in logs if "reason" in e]
        assert events == [
            ("api.connection_closed", "per_client"),
            ("api.connection_closed", "evicted"),
        ]

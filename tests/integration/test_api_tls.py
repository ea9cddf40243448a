"""The API over TLS, through the real uvicorn server: ``api.tls_cert_file``/``tls_key_file``
(and ``tls_client_ca_file``) with certificates made for the test (tests/tls.py).

httpx verifies the server against the test's CA; plain HTTP to the same port gets no
answer; with a client CA only clients holding a certificate from it get through, and the
bearer token is still required. /health and the audit log are as without TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs
from tests.auth import bearer
from tests.sites import machine_config, site_yaml
from tests.tls import Authority, Issued

from pilotline.demo.broker import free_port
from pilotline.gateway.api.app import serve_api
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway

pytestmark = pytest.mark.integration


class Pki:
    def __init__(self, folder: Path) -> None:
        self.ca = Authority(folder, "ca")
        self.server = self.ca.issue("api", server=True)
        self.client = self.ca.issue("client", server=False)
        self.rogue = Authority(folder / "rogue", "rogue-ca").issue("rogue", server=False)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, api: dict[str, Any]) -> AsyncIterator[tuple[Gateway, int]]:
    """The gateway's API served as ``Gateway.run`` serves it, on a free loopback port."""
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
        yield gateway, port
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        gateway.store.close()


def trusting(ca: Path, client: Issued | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        context.load_cert_chain(client.cert, client.key)
    return context


async def get(url: str, verify: ssl.SSLContext | bool, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(verify=verify, timeout=3) as client:
        return await client.get(url, headers=headers)


async def test_the_api_speaks_https_with_the_configured_certificate(
    tmp_path: Path, pki: Pki
) -> None:
    api = {"tls_cert_file": str(pki.server.cert), "tls_key_file": str(pki.server.key)}
    async with serving(tmp_path, api) as (gateway, port):
        https = f"https://127.0.0.1:{port}"
        verify = trusting(pki.ca.path)
        health = await get(f"{https}/health", verify)
        assert health.status_code in (200, 503)  # collectors not running: as without TLS
        assert set(health.json()) >= {"healthy"}
        with capture_logs() as logs:
            machines = await get(f"{https}/api/machines", verify, **bearer(gateway.store))
        assert machines.status_code == 200
        (access,) = [e for e in logs if e["event"] == "api.access"]
        assert (access["client"], access["status"]) == ("127.0.0.1", 200)
        assert (await get(f"{https}/api/machines", verify)).status_code == 401
        # a client that does not trust the test CA refuses the server
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await get(f"{https}/health", True)
        # plain HTTP to the TLS port gets no HTTP answer
        with pytest.raises(httpx.TransportError):
            await get(f"http://127.0.0.1:{port}/health", False)


async def test_the_listening_line_says_https(tmp_path: Path, pki: Pki) -> None:
    api = {"tls_cert_file": str(pki.server.cert), "tls_key_file": str(pki.server.key)}
    with capture_logs() as logs:
        async with serving(tmp_path, api) as (_, port):
            pass
    (line,) = [e for e in logs if e["event"] == "api.listening"]
    assert line["url"] == f"https://127.0.0.1:{port}"
    assert line["client_certificates"] is False


async def test_with_a_client_ca_only_its_certificates_get_through(
    tmp_path: Path, pki: Pki
) -> None:
    api = {
        "tls_cert_file": str(pki.server.cert),
        "tls_key_file": str(pki.server.key),
        "tls_client_ca_file": str(pki.ca.path),
    }
    async with serving(tmp_path, api) as (gateway, port):
        url = f"https://127.0.0.1:{port}/api/machines"
        token = bearer(gateway.store)
        answer = await get(url, trusting(pki.ca.path, pki.client), **token)
        assert answer.status_code == 200
        # the certificate does not replace the token
        assert (await get(url, trusting(pki.ca.path, pki.client))).status_code == 401
        for refused in (trusting(pki.ca.path), trusting(pki.ca.path, pki.rogue)):
            with pytest.raises(httpx.TransportError):
                await get(url, refused, **token)


async def test_unusable_certificate_files_stop_the_api_before_it_listens(
    tmp_path: Path, pki: Pki
) -> None:
    api = {"tls_cert_file": str(pki.server.cert), "tls_key_file": str(pki.client.key)}
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
    try:
        with pytest.raises(OSError, match=r"api\.tls_cert_file .*\(key values mismatch\)"):
            await asyncio.wait_for(serve_api(gateway), 5)
    finally:
        gateway.store.close()
    with pytest.raises(ConnectionRefusedError):  # nothing listens
        await asyncio.open_connection("127.0.0.1", port)

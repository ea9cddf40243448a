"""The API answers whatever its clients do: the real ``pilotline run`` serving HTTP.

Clients that hold connections without a request (idle, or headers never finished), from one
address or from many, neither turn ``/health`` into a 503 nor keep their connections; a
Host header the gateway does not answer to is refused and never reflected; an
``X-Forwarded-For`` from a peer that is not a configured proxy does not change the client
the audit log names. The gateway runs with the defaults of the ``api:`` section (the
shorthand ``api: 127.0.0.1:PORT``); the keys themselves are exercised in-process by
``test_api_settings.py``.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from tests.auth import cli_bearer
from tests.integration.test_cli import GatewayProcess, wait_healthy
from tests.process import pilotline_command, until
from tests.sites import live_site, pilot_camera, pilot_laser

from pilotline.demo.broker import MosquittoBroker, find_mosquitto, free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed"),
]

HOLD = 300
"""Connections an attacker holds: more than uvicorn's old ``limit_concurrency`` (256)."""
REQUEST_TIMEOUT_S = 10.0  # the default api.request_timeout_s
PER_CLIENT = 32  # the default api.max_connections_per_client
PARTIAL = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


@dataclass(frozen=True)
class Api:
    url: str
    port: int
    auth: dict[str, str]
    gateway: GatewayProcess


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One gateway for the module: each attack here leaves nothing behind once its sockets
    are closed (the tests close them)."""
    tmp = tmp_path_factory.mktemp("api-server")
    with MosquittoBroker(persistence=False, datadir=tmp / "mosq") as broker:
        port = free_port()
        config = tmp / "site.yaml"
        config.write_text(
            live_site(
                {"photonics": [pilot_laser()], "imaging": [pilot_camera()]},
                site="api-server",
                mqtt_url=broker.url,
                client_id=f"gw-api-{port}",
                port=port,
                store=tmp / "gw.db",
                log={"level": "info", "format": "json"},
            )
        )
        auth = cli_bearer(pilotline_command(), config)
        gateway = GatewayProcess(config, tmp)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(gateway, url)
            yield Api(url, port, auth, gateway)
        finally:
            gateway.kill()


@contextlib.contextmanager
def held(
    port: int, sources: list[str], send: bytes = b""
) -> Iterator[list[socket.socket]]:
    """Connections to the API from each of ``sources`` in turn (loopback addresses), each
    having sent ``send``, held open until the block ends."""
    socks: list[socket.socket] = []
    try:
        for i in range(HOLD):
            sock = socket.socket()
            socks.append(sock)
            sock.settimeout(5)
            sock.bind((sources[i % len(sources)], 0))
            sock.connect(("127.0.0.1", port))
            if send:
                with contextlib.suppress(OSError):  # already closed by the server: fine
                    sock.sendall(send)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def still_open(socks: list[socket.socket]) -> list[socket.socket]:
    """The connections the server has not closed (a closed one reads as EOF or a reset)."""
    readable, _, _ = select.select(socks, [], [], 0)
    gone = set()
    for sock in readable:
        try:
            if sock.recv(1024, socket.MSG_PEEK) == b"":
                gone.add(sock)
        except OSError:
            gone.add(sock)
    return [s for s in socks if s not in gone]


def health_within(api: Api, timeout_s: float = 3.0) -> httpx.Response:
    return httpx.get(f"{api.url}/health", timeout=timeout_s)


ONE_CLIENT = ["127.0.0.2"]
MANY_CLIENTS = [f"127.0.0.{n}" for n in range(2, 32)]  # 30 addresses, 10 connections each


@pytest.mark.parametrize("send", [b"", PARTIAL], ids=["idle", "partial-headers"])
@pytest.mark.parametrize("sources", [ONE_CLIENT, MANY_CLIENTS], ids=["one-client", "30-clients"])
def test_held_connections_do_not_starve_the_api(api: Api, sources: list[str], send: bytes) -> None:
    with held(api.port, sources, send) as socks:
        started = time.monotonic()
        health = health_within(api)
        assert health.status_code == 200, health.text
        machines = httpx.get(f"{api.url}/api/machines", headers=api.auth, timeout=3)
        assert machines.status_code == 200, machines.text
        assert time.monotonic() - started < 3
        if sources == ONE_CLIENT:  # one address keeps no more than its share
            assert len(still_open(socks)) <= PER_CLIENT


def test_a_connection_that_sends_no_complete_request_is_closed(api: Api) -> None:
    """Idle, stalled in its headers, or trickling one byte every half second: each is closed
    ``request_timeout_s`` after it connected, whatever it keeps sending."""
    idle, partial, trickle = (socket.create_connection(("127.0.0.1", api.port)) for _ in range(3))
    socks = [idle, partial, trickle]
    try:
        partial.sendall(PARTIAL)
        trickle.sendall(PARTIAL)
        started = time.monotonic()
        deadline = started + REQUEST_TIMEOUT_S + 5
        while still_open(socks) and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                trickle.sendall(b"x")
            time.sleep(0.5)
        assert still_open(socks) == []
        assert time.monotonic() - started > REQUEST_TIMEOUT_S - 1  # not at once either
        assert health_within(api).status_code == 200
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.parametrize("path", ["/health", "/api/machines", "/api/machines/"])
def test_a_foreign_host_is_refused_and_never_reflected(api: Api, path: str) -> None:
    answer = httpx.get(
        f"{api.url}{path}", headers={**api.auth, "Host": "evil.example"}, timeout=3
    )
    assert answer.status_code == 400
    assert "location" not in answer.headers
    assert "evil.example" not in answer.text


def test_no_slash_redirects(api: Api) -> None:
    answer = httpx.get(f"{api.url}/api/machines/", headers=api.auth, timeout=3)
    assert answer.status_code == 404
    assert "location" not in answer.headers


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", socket.gethostname()])
def test_the_hosts_of_this_machine_are_answered(api: Api, host: str) -> None:
    answer = httpx.get(
        f"{api.url}/health", headers={"Host": f"{host}:{api.port}"}, timeout=3
    )
    assert answer.status_code == 200


def test_forwarded_for_from_an_untrusted_peer_is_not_the_audited_client(api: Api) -> None:
    forged = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
    httpx.get(f"{api.url}/api/machines", headers={**api.auth, **forged}, timeout=3)
    bad_token = {"Authorization": "Bearer plt_deadbeef_" + "W" * 43}
    httpx.get(f"{api.url}/api/machines", headers={**bad_token, **forged}, timeout=3)

    def audited() -> list[dict[str, object]] | None:
        lines = [
            e for e in api.gateway.events()
            if e.get("event") in ("api.access", "api.auth_failed")
        ]
        kinds = {e["event"] for e in lines}
        return lines if kinds == {"api.access", "api.auth_failed"} else None

    lines = until(audited, 5, "an api.access and an api.auth_failed line")
    assert {e.get("client") for e in lines} == {"127.0.0.1"}, lines

"""The ``api:`` section and the bookkeeping of the API's connections, without a server.

The section: its short form, its keys refused with their path and line, the hosts answered
by default. The guard: a share per client, the total with the oldest waiting connection
evicted, trusted proxies without a share. Through a real server: tests/integration/
test_api_server.py and test_api_settings.py.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from pathlib import Path

import pytest
from tests.sites import load_text, refused

from pilotline.gateway.api.config import ApiConfig
from pilotline.gateway.api.connections import ConnectionGuard, ConnectionLimits
from pilotline.gateway.api.hosts import HostGuard, host_of

SITE = """\
site: s
zones:
  - id: z
    machines:
      - id: m
        owner: o
        opcua: {endpoint: "opc.tcp://127.0.0.1:4840", nodes: {state: "ns=2;s=S"}}
        state: {signal: state}
"""


def with_api(api: str) -> str:
    return SITE + textwrap.dedent(api)


def test_the_short_form_is_the_listen_address(tmp_path: Path) -> None:
    config = load_text(tmp_path, with_api("api: '[::1]:9000'\n"))
    assert config.api == ApiConfig(listen="[::1]:9000")
    assert (config.api_host, config.api_port) == ("::1", 9000)
    assert load_text(tmp_path, SITE).api == ApiConfig()


def test_the_section_sets_every_limit(tmp_path: Path) -> None:
    config = load_text(tmp_path, with_api("""\
        api:
          listen: 0.0.0.0:8080
          allowed_hosts: [Gateway.Plant.example, "*.plant.example", 10.1.0.5, "fd00::1"]
          trusted_proxies: [10.1.0.9, 10.2.0.0/16]
          request_timeout_s: 2.5
          keep_alive_s: 3
          max_connections: 100
          max_connections_per_client: 10
        """))
    api = config.api
    assert api.allowed_hosts == [
        "gateway.plant.example", "*.plant.example", "10.1.0.5", "[fd00::1]"
    ]
    assert api.trusted_proxies == ["10.1.0.9", "10.2.0.0/16"]
    assert (api.request_timeout_s, api.keep_alive_s) == (2.5, 3)
    assert (api.max_connections, api.max_connections_per_client) == (100, 10)
    assert api.is_trusted_proxy("10.2.3.4")
    assert not api.is_trusted_proxy("10.3.0.1")
    assert not api.is_trusted_proxy("not-an-address")


@pytest.mark.parametrize(
    ("api", "path", "line"),
    [
        ("api: 8080\n", "api", 9),
        ("api: {listen: 'localhost:0'}\n", "api.listen", 9),
        ("api:\n  allowed_hosts: [evil example]\n", "api.allowed_hosts[0]", 10),
        ("api:\n  allowed_hosts: []\n", "api.allowed_hosts", 10),
        ("api:\n  allowed_hosts: ['*.10.0.0.1']\n", "api.allowed_hosts[0]", 10),
        ("api:\n  trusted_proxies: [proxy.local]\n", "api.trusted_proxies[0]", 10),
        ("api:\n  request_timeout_s: 0\n", "api.request_timeout_s", 10),
        ("api:\n  request_timeout_s: true\n", "api.request_timeout_s", 10),
        ("api:\n  keep_alive_s: 301\n", "api.keep_alive_s", 10),
        ("api:\n  max_connections: 1\n", "api.max_connections", 10),
        ("api:\n  max_connections: 10\n  max_connections_per_client: 11\n", "api", 9),
        ("api:\n  max_connection: 10\n", "api.max_connection", 10),
    ],
)
def test_a_wrong_api_section_is_refused_with_its_path(
    tmp_path: Path, api: str, path: str, line: int
) -> None:
    issues = refused(tmp_path, with_api(api))
    assert [(i.path, i.line) for i in issues] == [(path, line)], issues


def test_default_hosts_are_loopback_the_listen_address_and_the_machine() -> None:
    assert ApiConfig(listen="10.1.0.5:8080").hosts(["edge-7"]) == [
        "localhost", "127.0.0.1", "[::1]", "10.1.0.5", "edge-7"
    ]
    # every interface is not a host; a name listened on is
    assert ApiConfig(listen="0.0.0.0:8080").hosts(["EDGE-7"]) == [
        "localhost", "127.0.0.1", "[::1]", "edge-7"
    ]
    assert ApiConfig(listen="[::]:8080").hosts([""]) == ["localhost", "127.0.0.1", "[::1]"]
    assert ApiConfig(allowed_hosts=["a.example"]).hosts(["edge-7"]) == ["a.example"]


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("localhost:8080", "localhost"),
        ("Gateway.Example.", "gateway.example"),
        ("[::1]:8080", "[::1]"),
        ("10.1.0.5", "10.1.0.5"),
        ("evil.example/x", None),
        ("a b", None),
        ("", None),
        (None, None),
    ],
)
def test_host_of_a_header(header: str | None, host: str | None) -> None:
    assert host_of(header) == host


async def _app(scope: object, receive: object, send: object) -> None:  # pragma: no cover
    raise AssertionError("not reached")


def test_host_patterns() -> None:
    guard = HostGuard(_app, ["gw.example", "*.plant.example", "[::1]"], Counter())
    assert guard.allows("gw.example")
    assert guard.allows("[::1]")
    assert guard.allows("a.plant.example")
    assert guard.allows("a.b.plant.example")
    assert not guard.allows("plant.example")
    assert not guard.allows("evilplant.example")
    assert not guard.allows("evil.example")
    assert not guard.allows(None)
    assert HostGuard(_app, ["*"], Counter()).allows(None)


class Conn:
    def __init__(self, name: str) -> None:
        self.name = name
        self.evicted = False

    def evict(self) -> None:
        self.evicted = True

    def __repr__(self) -> str:
        return self.name


def guard(total: int = 4, per_client: int = 2, proxy: str = "") -> ConnectionGuard:
    limits = ConnectionLimits(
        request_timeout_s=1, max_connections=total, max_per_client=per_client,
        shares=lambda peer: peer != proxy,
    )
    return ConnectionGuard(limits, Counter())


def test_a_client_keeps_its_share_and_no_more() -> None:
    g = guard()
    a1, a2, a3, b1 = Conn("a1"), Conn("a2"), Conn("a3"), Conn("b1")
    assert g.opened(a1, "A") is None
    assert g.opened(a2, "A") is None
    assert g.opened(a3, "A") == "per_client"
    assert g.opened(b1, "B") is None
    g.gone(a1)
    g.gone(a1)  # idempotent
    assert g.opened(a3, "A") is None
    assert g.closed == Counter(per_client=1)
    assert len(g) == 3


def test_the_oldest_waiting_connection_makes_room() -> None:
    g = guard(total=3, per_client=3)
    a, b, c, d, e = (Conn(n) for n in "abcde")
    for conn, peer in ((a, "A"), (b, "B"), (c, "C")):
        assert g.opened(conn, peer) is None
    g.busy(a)  # a is being answered: not evicted
    assert g.opened(d, "D") is None
    assert (a.evicted, b.evicted, c.evicted) == (False, True, False)
    g.busy(c)
    g.busy(d)
    assert g.opened(e, "E") == "full"  # nobody waits: the newcomer is refused
    g.waiting(a)  # a's next request: evictable again, as the newest waiting
    assert g.opened(e, "E") is None
    assert a.evicted
    assert g.closed == Counter(evicted=2, full=1)


def test_a_trusted_proxy_has_no_share_only_the_total() -> None:
    g = guard(total=5, per_client=1, proxy="P")
    for n in range(5):
        assert g.opened(Conn(f"p{n}"), "P") is None
    assert g.opened(Conn("a"), "A") is None  # evicts the oldest of the proxy's
    assert g.closed == Counter(evicted=1)

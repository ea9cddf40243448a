"""Configuration of the HTTP API: the site's ``api:`` section.

``api: 127.0.0.1:8080`` is the short form of ``api: {listen: 127.0.0.1:8080}``; the long
form also bounds what clients may hold (docs/security.md, "The API answers whatever clients
do")::

    api:
      listen: 0.0.0.0:8080
      allowed_hosts: [gateway.plant.example, 10.1.0.5]   # default: see ``hosts()``
      trusted_proxies: [10.1.0.9]        # X-Forwarded-For/-Proto from these only; default none
      request_timeout_s: 10              # a connection's request, head and body, within this
      keep_alive_s: 5                    # an idle kept-alive connection is closed after this
      max_connections: 256               # beyond: the oldest waiting for a request is closed
      max_connections_per_client: 32     # per peer address (a trusted proxy: no share)
      tls_cert_file: /etc/pilotline/api.pem   # with tls_key_file: HTTPS only (tls.py)
      tls_key_file: /etc/pilotline/api.key
      tls_client_ca_file: /etc/pilotline/clients-ca.pem   # optional: clients need a cert
      shard_urls: [https://gw-1:8080, https://gw-2:8080]   # sharded: each shard's API, by K
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Iterable
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from pilotline.collectors.fields import (
    Model,
    PositiveSeconds,
    ReadFile,
    WholeSeconds,
    reject_bool,
)

__all__ = ["ApiConfig", "api_section", "split_listen"]

_HOSTNAME_RE: Final = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_WILDCARDS: Final = frozenset({"0.0.0.0", "::"})  # nosec B104 (recognised, never bound)
LOOPBACK_HOSTS: Final = ("localhost", "127.0.0.1", "[::1]")


def split_listen(value: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) -> host (no brackets) and port; ``ValueError`` if not."""
    shape = "api must be host:port, like 127.0.0.1:8080 or [::1]:8080"
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{shape}, got {value!r}")
    if not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"api port must be 1-65535, got {port_text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{shape}: {host!r} is not an IPv6 address") from None
    elif re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"{shape}: {host!r} is not an IPv4 address") from None
    elif not _HOSTNAME_RE.fullmatch(host):
        raise ValueError(f"{shape}: {host!r} is not a host name or an address")
    return host, int(port_text)


def _check_listen(value: str) -> str:
    host, port = split_listen(value)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def host_name(host: str) -> str:
    """A host as a Host header carries it, without port: lower case, IPv6 in brackets."""
    host = host.lower().rstrip(".")
    if ":" in host.strip("[]"):
        return f"[{host.strip('[]')}]"
    return host


def _check_host(value: str) -> str:
    """An allowed Host: a name, ``*.`` and a domain (any name under it), an address, or
    ``*`` (any host: the check is off)."""
    if value == "*":
        return value
    name = value[2:] if value.startswith("*.") else value
    bare = name.strip("[]")
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        if "[" in name or not _HOSTNAME_RE.fullmatch(name):
            raise ValueError(
                f"{value!r} is not a host name, *.domain, an IP address or *"
            ) from None
    else:
        if value.startswith("*."):
            raise ValueError(f"{value!r}: a wildcard takes a domain, not an address")
    return host_name(value)


def _check_proxy(value: str) -> str:
    """A proxy's address or network (``10.1.0.9``, ``10.1.0.0/24``, ``fd00::/64``)."""
    try:
        return str(ipaddress.ip_network(value, strict=False) if "/" in value
                   else ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(
            f"{value!r} is not an IP address or network (a proxy is named by its address)"
        ) from None


def _check_base_url(value: str) -> str:
    """A shard's API base URL: ``http(s)://host[:port][/prefix]``, without a trailing ``/``,
    credentials, query or fragment (a 421's ``Location`` is built on it)."""
    try:
        url = urllib.parse.urlsplit(value)
        url.port  # noqa: B018 (raises on a port that is not a number or out of range)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"{value!r} is not an http:// or https:// URL with a host")
    if url.username is not None or url.password is not None:
        raise ValueError(f"{value!r}: no credentials in a URL that clients are sent to")
    if url.query or url.fragment:
        raise ValueError(f"{value!r}: a base URL has no query or fragment")
    return value.rstrip("/")


class ApiConfig(Model):
    """``api:``: where the API listens, which hosts it answers to, what a client may hold."""

    listen: Annotated[str, AfterValidator(_check_listen)] = "127.0.0.1:8080"
    """``host:port`` (``[v6]:port``) the API listens on; ``0.0.0.0`` or ``::``: every interface."""
    allowed_hosts: list[Annotated[str, AfterValidator(_check_host)]] | None = Field(
        default=None, min_length=1
    )
    """Host headers answered (others: 400); unset: ``hosts()``'s defaults."""
    trusted_proxies: list[Annotated[str, AfterValidator(_check_proxy)]] = Field(
        default_factory=list
    )
    """Addresses or networks (``10.1.0.0/24``) of reverse proxies whose ``X-Forwarded-For`` and
    ``X-Forwarded-Proto`` are believed."""
    request_timeout_s: Annotated[PositiveSeconds, Field(ge=0.1, le=300)] = 10.0
    """A connection must send a complete request (head and body) within this of connecting, or of
    the first byte of its next request."""
    keep_alive_s: Annotated[WholeSeconds, Field(ge=1, le=300)] = 5
    """An idle kept-alive connection is closed after this (whole seconds)."""
    max_connections: Annotated[int, BeforeValidator(reject_bool), Field(ge=2, le=10_000)] = 256
    """Connections open at once; at the limit the oldest one still waiting for its request is
    closed."""
    max_connections_per_client: Annotated[
        int, BeforeValidator(reject_bool), Field(ge=1, le=10_000)
    ] = 32
    """Connections one client address may hold (a trusted proxy: the total only)."""
    tls_cert_file: ReadFile = None
    """The API's certificate (PEM, intermediates after it); with ``tls_key_file`` the API
    speaks HTTPS only."""
    tls_key_file: ReadFile = None
    """Its private key (PEM, unencrypted; keep it 0600, readable by the gateway's user)."""
    tls_client_ca_file: ReadFile = None
    """CA certificate(s) (PEM) a client's certificate must chain to: mutual TLS."""
    shard_urls: list[Annotated[str, AfterValidator(_check_base_url)]] | None = Field(
        default=None, min_length=1, max_length=1024
    )
    """Sharded sites: the base URL of each shard's API, shard 1 first (exactly N entries for
    ``--shard K/N``), so that a booking request for another shard's machine is answered with
    where to send it (421 with ``Location``; docs/scaling.md)."""

    @model_validator(mode="after")
    def _share_within_total(self) -> ApiConfig:
        if self.max_connections_per_client > self.max_connections:
            raise ValueError(
                f"max_connections_per_client ({self.max_connections_per_client}) is more "
                f"than max_connections ({self.max_connections})"
            )
        return self

    @model_validator(mode="after")
    def _tls_files_together(self) -> ApiConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError(
                "tls_cert_file and tls_key_file go together: set both (HTTPS), or neither"
            )
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError(
                "tls_client_ca_file is set without tls_cert_file and tls_key_file: client "
                "certificates need the API to speak HTTPS"
            )
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]

    def is_trusted_proxy(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in ipaddress.ip_network(p) for p in self.trusted_proxies)

    def hosts(self, machine_names: Iterable[str]) -> list[str]:
        """The Host headers answered: ``allowed_hosts``, else the loopback names, the
        listening address (unless all interfaces) and ``machine_names`` (its host name)."""
        if self.allowed_hosts is not None:
            return list(self.allowed_hosts)
        found = list(LOOPBACK_HOSTS)
        if self.host not in _WILDCARDS:
            found.append(self.host)
        found.extend(name for name in machine_names if name)
        return list(dict.fromkeys(host_name(h) for h in found))


def api_section(value: Any) -> Any:
    """``api: host:port`` is ``api: {listen: host:port}``; a wrong address is reported at
    ``api`` itself, as the file has it."""
    if isinstance(value, str):
        _check_listen(value)
        return {"listen": value}
    return value

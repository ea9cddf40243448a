"""Configuration of the InfluxDB sink: the site's ``influx:`` section.

The token never sits in the file: it comes from ``token_file`` or from the environment
variable ``PILOTLINE_INFLUX_TOKEN``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Final
from urllib.parse import SplitResult, urlsplit

from pydantic import BeforeValidator, Field, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from pilotline.collectors.fields import Connection, PositiveSeconds, ReadFile, Secret, SecretFile

__all__ = ["INFLUX_TOKEN_ENV", "InfluxConfig"]

INFLUX_TOKEN_ENV: Final = "PILOTLINE_INFLUX_TOKEN"  # noqa: S105 (a variable name, not a secret)
TOKEN: Final = Secret("token", env=INFLUX_TOKEN_ENV, strip=True)


# The client adds the API's path to the url; a url that already has one is answered 404 on
# every write, retried forever. A reverse proxy's own prefix (``/influx``) is kept.
_API_SEGMENTS: Final = frozenset({"api", "write", "query", "health", "ping", "metrics"})


def _check_base(url: str, parts: SplitResult) -> None:
    segments = [s for s in parts.path.split("/") if s]
    api = next((i for i, s in enumerate(segments) if s.lower() in _API_SEGMENTS), None)
    if api is None and not (parts.query or parts.fragment):
        return
    prefix = "".join(f"/{s}" for s in segments[:api])
    base = f"{parts.scheme}://{parts.netloc}{prefix}"
    raise ValueError(
        f"url {url!r} is not the server's base URL: give {base} (the gateway adds "
        "/api/v2/write itself; org and bucket are keys of their own)"
    )


class InfluxConfig(Connection):
    """``influx:``: where points go besides the embedded store. The token never sits here."""

    url: str
    """The InfluxDB server's base URL, ``http(s)://host:8086`` (a reverse proxy's prefix allowed):
    the gateway adds ``/api/v2/write`` itself."""
    org: str = Field(min_length=1)
    """The InfluxDB 2.x organisation (any non-empty text for 1.8's v2 API)."""
    bucket: str = Field(min_length=1)
    """The bucket points are written to (on 1.8: ``database/retention``)."""
    token_file: SecretFile = None
    """The file the write token is read from (or ``PILOTLINE_INFLUX_TOKEN``); read at each write, so
    a rotated token is picked up."""
    ca_file: ReadFile = None
    """CA certificate(s) (PEM) an https:// server's certificate must chain to."""
    batch_size: int = Field(default=5000, ge=1, le=1_000_000)
    """Most lines per write request."""
    flush_interval_s: PositiveSeconds = 1.0
    """Lines waiting in the outbox are written at least this often."""
    timeout_s: PositiveSeconds = 10.0
    """A write request that has not been answered within this is retried later."""
    outbox_max_points: int = Field(default=5_000_000, ge=1_000)
    """Most lines the durable outbox keeps while InfluxDB is away (their size on disk:
    benchmarks/README.md); beyond it raw telemetry is dropped first, oldest first, then
    events."""
    outbox_max_bytes: int = Field(default=1024**3, ge=1024**2)
    """Most bytes of line text the outbox keeps (1 GiB: lines of up to 200 bytes reach
    ``outbox_max_points`` first); beyond it the same policy as ``outbox_max_points``. Lines
    are not all alike (64 signals make a line of a kilobyte), so the disk is bounded in
    bytes too."""
    # The inline key exists only to be refused with advice: editors never propose it.
    inline_token: Annotated[SkipJsonSchema[None], BeforeValidator(TOKEN.refuse)] = Field(
        default=None, alias="token", exclude=True, repr=False
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        if parts.username is not None or parts.password is not None:
            raise ValueError(f"url must not carry credentials: {TOKEN.advice}")
        if not parts.hostname:
            raise ValueError(f"url has no host: {url!r}")
        try:
            _ = parts.port
        except ValueError:
            raise ValueError(f"url has an invalid port: {url!r}") from None
        _check_base(url, parts)
        return url

    @model_validator(mode="after")
    def _ca_needs_https(self) -> InfluxConfig:
        if self.ca_file is not None and urlsplit(self.url).scheme != "https":
            raise ValueError("ca_file is set but the url is http:// (no TLS): use https://")
        return self

    def token(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The token from ``token_file`` (preferred) or ``PILOTLINE_INFLUX_TOKEN``.

        None when neither is set (a store without authentication). Raises OSError if the
        file cannot be read; read on each call, so a rotated token is picked up.
        """
        return TOKEN.read(self.token_file, environ)

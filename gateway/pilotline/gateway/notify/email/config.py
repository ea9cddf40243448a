"""Configuration of the e-mail channel: one ``alerts.email`` entry."""

from __future__ import annotations

from email.utils import parseaddr
from typing import Annotated, ClassVar, Final

from pydantic import AfterValidator, BeforeValidator, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from pilotline.collectors.fields import PositiveSeconds, ReadFile, Secret, SecretFile
from pilotline.gateway.notify.config import ChannelConfig

__all__ = ["Address", "EmailConfig"]

PASSWORD: Final = Secret("password")
"""The SMTP password: from ``password_file`` only."""


def _check_address(value: str) -> str:
    # Header injection and typos: one plain address (optionally "Name <a@b>"), no line breaks.
    _, address = parseaddr(value)
    local, _, domain = address.rpartition("@")
    if (
        any(ch in value for ch in "\r\n")
        or not local
        or not domain
        or any(ch.isspace() for ch in address)
    ):
        raise ValueError(f"{value!r} is not an e-mail address")
    return value


def _check_host(value: str) -> str:
    if not value or any(ch.isspace() or ch in "/@" for ch in value):
        raise ValueError(f"{value!r} is not a host name or address (no scheme, no port)")
    return value


Address = Annotated[str, AfterValidator(_check_address)]


class EmailConfig(ChannelConfig):
    """One ``alerts.email`` entry: an SMTP submission server that mails each grouped
    notification to ``to``. STARTTLS by default (port 587), ``tls: true`` for implicit TLS
    (port 465); credentials only over TLS, the password from ``password_file``."""

    KIND: ClassVar[str] = "e-mail"

    host: Annotated[str, AfterValidator(_check_host)]
    """The SMTP submission server's host name or address (no scheme, no port)."""
    port: int | None = Field(default=None, ge=1, le=65_535)
    """Default: 465 with ``tls: true``, else 587."""
    starttls: bool = True
    """Upgrade the connection with STARTTLS (port 587); refused by a server without it."""
    tls: bool = False
    """Implicit TLS from the first byte (SMTPS, port 465) instead of STARTTLS."""
    username: str | None = Field(default=None, min_length=1)
    """The SMTP user (goes with ``password_file``; sent over TLS only)."""
    password_file: SecretFile = None
    """The file the SMTP password is read from."""
    ca_file: ReadFile = None
    """CA certificate(s) (PEM) the server's certificate must chain to; default: the system's."""
    sender: Address = Field(alias="from")
    """The ``From:`` address."""
    to: list[Address] = Field(min_length=1)
    """The recipients."""
    timeout_s: PositiveSeconds = 30.0
    """A delivery not done within this is retried later."""
    # The inline key exists only to be refused with advice: editors never propose it.
    inline_password: Annotated[SkipJsonSchema[None], BeforeValidator(PASSWORD.refuse)] = Field(
        default=None, alias="password", exclude=True, repr=False
    )

    @model_validator(mode="after")
    def _check_security(self) -> EmailConfig:
        if self.tls and self.starttls and "starttls" in self.model_fields_set:
            raise ValueError("tls: true is implicit TLS: drop starttls (it is for port 587)")
        if (self.username is None) != (self.password_file is None):
            raise ValueError("username and password_file go together: set both, or neither")
        if not self.encrypted:
            if self.username is not None:
                raise ValueError(
                    "credentials are only sent over TLS: set starttls: true or tls: true"
                )
            if self.ca_file is not None:
                raise ValueError("ca_file is set but starttls and tls are both off")
        return self

    @property
    def encrypted(self) -> bool:
        return self.tls or self.starttls

    @property
    def smtp_port(self) -> int:
        return self.port if self.port is not None else (465 if self.tls else 587)

    def password(self) -> str | None:
        """The password from ``password_file``, read on each call (a rotated one is picked
        up without a restart). Raises OSError if the file cannot be read."""
        return PASSWORD.read(self.password_file)

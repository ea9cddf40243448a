"""Configuration of the OPC UA collector: one machine's ``opcua:`` section.

Machines on the same ``endpoint`` share one connection, so the connection settings
(security, certificates, trust, user) of every machine on an endpoint must agree;
:func:`connection_conflicts` says where they do not. Subscription settings (publishing and
sampling intervals, deadbands, state model) stay per machine.

Secrets never sit in the configuration file: the password comes from ``password_file`` or
from the environment variable ``PILOTLINE_OPCUA_PASSWORD``; private keys from files.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Final, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from pilotline.collectors.fields import (
    Connection,
    Milliseconds,
    PrivateFile,
    ReadFile,
    Secret,
    SecretFile,
    Signal,
    reject_bool,
)

__all__ = [
    "CONNECTION_FIELDS",
    "PASSWORD_ENV",
    "OpcuaSource",
    "StateModel",
    "connection_conflicts",
]

PASSWORD_ENV: Final = "PILOTLINE_OPCUA_PASSWORD"  # noqa: S105 - the variable's name
PASSWORD: Final = Secret("password", env=PASSWORD_ENV)
NODE_ID_RE: Final = re.compile(r"(?:ns=\d+;|nsu=[^;]+;)?[isgb]=.+", re.DOTALL)
StateModel = Literal["machinery", "packml", "mtconnect"]

# Settings of the one connection an endpoint gets: every machine on it must agree on these.
CONNECTION_FIELDS: Final = (
    "security_policy",
    "security_mode",
    "certificate_file",
    "private_key_file",
    "server_certificate_file",
    "trust_dir",
    "username",
    "password_file",
)


Deadband = Annotated[float, BeforeValidator(reject_bool), Field(gt=0, allow_inf_nan=False)]


class OpcuaSource(Connection):
    """A machine's ``opcua:`` section: the server and which node feeds which signal."""

    endpoint: str
    """The server: ``opc.tcp://host[:port][/path]``, without credentials. Machines on one endpoint
    share one connection."""
    nodes: dict[Signal, str] = Field(min_length=1)
    """Signal name to node id: ``ns=2;s=X``, ``nsu=<namespace URI>;s=X`` (re-resolved at each
    session), ``i=``, ``g=`` or ``b=``."""
    security_policy: Literal["None", "Basic256Sha256"] = "None"
    """``None``, or ``Basic256Sha256`` with a ``security_mode`` of ``Sign`` or
    ``SignAndEncrypt``."""
    security_mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    """``None``, ``Sign`` or ``SignAndEncrypt`` (goes with ``security_policy``)."""
    certificate_file: ReadFile = None
    """The client certificate (DER or PEM; its ApplicationUri in SubjectAltName); without it and
    ``private_key_file`` a certificate is generated once in the gateway's PKI folder and kept."""
    private_key_file: PrivateFile = None
    """The client certificate's private key (PEM or DER); goes with ``certificate_file``."""
    server_certificate_file: ReadFile = None
    """Pins the server's certificate: only this one is trusted."""
    trust_dir: Path | None = None
    """A folder of trusted server certificates (DER or PEM); default: ``<pki>/trusted``."""
    username: str | None = Field(default=None, min_length=1)
    """The user of the session (anonymous without it)."""
    password_file: SecretFile = None
    """The file the user's password is read from (or ``PILOTLINE_OPCUA_PASSWORD``)."""
    publishing_interval_ms: Milliseconds = Field(default=1000, ge=10, le=3_600_000)
    """How often the server sends the changes of a subscription; machines with the same interval
    share one."""
    sampling_interval_ms: Milliseconds = Field(default=500, ge=0, le=3_600_000)
    """How often the server samples each node (0: as fast as it can)."""
    deadband: dict[Signal, Deadband] = Field(default_factory=dict)
    """Absolute deadband per numeric signal: a change smaller than this is not reported."""
    state_model: StateModel | None = None
    """Translates numeric state codes of ``state_signal`` into the names of this standard model."""
    state_signal: Signal = "state"
    """The signal ``state_model`` applies to."""
    # The inline key exists only to be refused with advice: editors never propose it.
    inline_password: Annotated[SkipJsonSchema[None], BeforeValidator(PASSWORD.refuse)] = Field(
        default=None, alias="password", exclude=True, repr=False
    )

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, endpoint: str) -> str:
        parts = urlsplit(endpoint)
        if parts.scheme != "opc.tcp":
            raise ValueError(f"endpoint must start with opc.tcp://, got {endpoint!r}")
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                f"endpoint must not carry credentials: set username, and {PASSWORD.file_key} "
                f"or {PASSWORD_ENV}"
            )
        if not parts.hostname:
            raise ValueError(f"endpoint has no host: {endpoint!r}")
        try:
            _ = parts.port
        except ValueError:
            raise ValueError(f"endpoint has an invalid port: {endpoint!r}") from None
        return endpoint

    @field_validator("nodes")
    @classmethod
    def _check_nodes(cls, nodes: dict[str, str]) -> dict[str, str]:
        bad = [
            f"{signal}: {node!r}"
            for signal, node in nodes.items()
            if not NODE_ID_RE.fullmatch(node)
        ]
        if bad:
            raise ValueError(
                "not an OPC UA node id (like 'ns=2;s=Laser01.State', "
                "'nsu=urn:vendor:laser;s=State' or 'i=2258'): " + ", ".join(bad)
            )
        return nodes

    @model_validator(mode="after")
    def _check_consistency(self) -> OpcuaSource:
        if (self.security_policy == "None") != (self.security_mode == "None"):
            raise ValueError(
                "security_policy and security_mode go together: both None, or "
                "Basic256Sha256 with Sign or SignAndEncrypt"
            )
        if (self.certificate_file is None) != (self.private_key_file is None):
            raise ValueError(
                "certificate_file and private_key_file go together: set both, or neither "
                "(a client certificate is then generated once and kept)"
            )
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file is set without a username")
        unknown = [signal for signal in self.deadband if signal not in self.nodes]
        if unknown:
            raise ValueError(f"deadband names signals that are not nodes: {', '.join(unknown)}")
        if self.state_model is not None and self.state_signal not in self.nodes:
            raise ValueError(
                f"state_model needs state_signal {self.state_signal!r} to be one of nodes "
                f"({', '.join(self.nodes)})"
            )
        return self

    @property
    def secure(self) -> bool:
        return self.security_policy != "None"

    def password(self) -> str | None:
        """From ``password_file`` (preferred) or ``PILOTLINE_OPCUA_PASSWORD``; read each time.

        Raises OSError if the file cannot be read.
        """
        return PASSWORD.read(self.password_file)


def connection_conflicts(sources: Iterable[tuple[str, OpcuaSource]]) -> list[str]:
    """Why machines that share an endpoint cannot share its connection (empty: they can).

    ``sources`` are (machine id, source) pairs; each message names the machines and the key.
    """
    first: dict[str, tuple[str, OpcuaSource]] = {}
    problems: list[str] = []
    for machine, source in sources:
        seen = first.setdefault(source.endpoint, (machine, source))
        if seen[0] == machine:
            continue
        for key in CONNECTION_FIELDS:
            if getattr(source, key) != getattr(seen[1], key):
                problems.append(
                    f"{machine} and {seen[0]} share {source.endpoint} (one connection) but "
                    f"differ in {key}: {getattr(source, key)!r} != {getattr(seen[1], key)!r}"
                )
    return problems

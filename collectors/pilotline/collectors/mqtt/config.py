"""Configuration of the MQTT collector: the broker connection and one machine's source.

Secrets never sit in the configuration file: the password comes from ``password_file`` or
from the environment variable ``PILOTLINE_MQTT_PASSWORD`` (``pilotline.collectors.fields``).
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from pilotline.collectors.fields import (
    Connection,
    Model,
    PositiveSeconds,
    PrivateFile,
    ReadFile,
    Secret,
    SecretFile,
    WholeSeconds,
)
from pilotline.collectors.mqtt.formats import PayloadFormat, PayloadSection
from pilotline.collectors.mqtt.templates import parse_template

PASSWORD_ENV = "PILOTLINE_MQTT_PASSWORD"  # noqa: S105 (a variable's name) # nosec B105
PASSWORD = Secret("password", env=PASSWORD_ENV)
_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
PACKET_HEADROOM_BYTES = 72 * 1024
"""A PUBLISH's bytes besides its payload: fixed header (5), topic (2 + at most 65,535),
packet id (2), properties (a broker adds few; 6 KiB left for them)."""
MAX_PACKET_BYTES = 268_435_460  # MQTT's largest packet: remaining length 268,435,455 + header


def _split_url(url: str) -> tuple[str, str, int]:
    """``mqtt[s]://host[:port]`` -> (scheme, host, port); ValueError says what is wrong."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"url must start with mqtt:// or mqtts://, got {url!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"url must not carry credentials: {PASSWORD.refusal}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"url must be {scheme}://host[:port] without a path or query")
    host = parts.hostname
    if not host:
        raise ValueError(f"url has no host: {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"url has an invalid port: {url!r}") from None
    if port == 0:
        raise ValueError(f"url has an invalid port: {url!r}")
    return scheme, host, port or _DEFAULT_PORTS[scheme]


class TopicPattern(Model):
    """One of ``mqtt.topics``: a topic pattern whose ``{machine}`` level gives the machine, for
    the machines whose ``mqtt:`` names no topic of their own."""

    topic: str
    """The pattern: ``+`` and a last ``#`` are wildcards, ``{machine}`` is the level holding the
    machine's id (required), a last ``{signal}`` names the one signal each message carries
    (``plant/+/{machine}/{signal}``). Each machine is subscribed with its own filter."""
    payload: PayloadSection = Field(default_factory=PayloadFormat)
    """The payloads' format: ``pilotline`` (default), ``umh``, ``telegraf``, or a section."""

    @field_validator("topic")
    @classmethod
    def _check_topic(cls, topic: str) -> str:
        parse_template(topic, needs_machine=True)
        return topic


class MqttBrokerConfig(Connection):
    """The ``mqtt:`` section of the site configuration."""

    url: str
    """The broker: ``mqtt://host[:port]`` (1883), or ``mqtts://`` for TLS (8883); no path, no
    credentials."""
    username: str | None = None
    """The gateway's user on the broker; its password from ``password_file`` or
    ``PILOTLINE_MQTT_PASSWORD``."""
    password_file: SecretFile = None
    """The file the broker password is read from (at each connection: a rotated one is picked
    up)."""
    client_id: str | None = Field(default=None, min_length=1, max_length=128)
    """A stable client id, so the broker keeps the gateway's session (and its queued messages)
    across restarts; default: ``pilotline-<site>`` (a shard adds ``-shard-KofN``)."""
    keepalive_s: WholeSeconds = Field(default=30, ge=5, le=600)
    """MQTT keep-alive: the broker drops the connection after 1.5 times this without a packet (whole
    seconds)."""
    session_expiry_s: WholeSeconds = Field(default=86_400, ge=0, le=0xFFFFFFFF)
    """How long the broker keeps the session and queues messages while the gateway is away (MQTT 5;
    whole seconds)."""
    max_payload_bytes: int = Field(default=65_536, ge=16, le=268_435_455)
    """Larger payloads are refused: quarantined as ``oversized`` when a little larger, and
    not even sent by the broker when larger than the MQTT 5 Maximum Packet Size the gateway
    asks for in its CONNECT (``max_packet_bytes``)."""
    max_signals: int = Field(default=64, ge=1, le=10_000)
    """Most signals one payload may bring: beyond it the machine's configured signals (its
    state signal, those the alert rules read) are kept and the other keys dropped and
    counted, so a publisher cannot turn one message into thousands of telemetry fields."""
    receive_maximum: int = Field(default=10_000, ge=1, le=65_535)
    """MQTT 5 Receive Maximum: QoS 1 messages the broker may have in flight to the gateway
    unacknowledged. It bounds what the gateway holds in memory; the broker keeps the rest
    (flow control, not loss)."""
    reconnect_max_s: PositiveSeconds = Field(default=30.0, le=3600)
    """The longest wait between reconnection attempts (the waits grow to it, with jitter)."""
    ca_file: ReadFile = None
    """CA certificate(s) (PEM) the broker's certificate must chain to; default: the system's."""
    cert_file: ReadFile = None
    """This gateway's client certificate (PEM), for a broker that requires one."""
    key_file: PrivateFile = None
    """The client certificate's private key (PEM, unencrypted; keep it mode 0600)."""
    topics: list[TopicPattern] = Field(default_factory=list)
    """Topic patterns for machines whose ``mqtt:`` names no topic (``mqtt: {}``): each such
    machine is subscribed under every pattern, its id in the ``{machine}`` level."""

    @model_validator(mode="before")
    @classmethod
    def _refuse_inline_secrets(cls, data: Any) -> Any:
        # Before anything else: a section with an inline password is reported for that alone.
        return PASSWORD.refuse_in(data)

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        _split_url(url)
        return url

    @model_validator(mode="after")
    def _check_consistency(self) -> MqttBrokerConfig:
        for name in ("ca_file", "cert_file", "key_file"):
            if getattr(self, name) is not None and not self.tls:
                raise ValueError(f"{name} is set but the url is mqtt:// (no TLS): use mqtts://")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: set both, or neither")
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file is set without a username")
        return self

    @property
    def max_packet_bytes(self) -> int:
        """The Maximum Packet Size the gateway announces: a PUBLISH of the largest accepted
        payload with room for any topic (up to 65,535 bytes) and properties, so that a
        slightly oversized payload still arrives to be quarantined as ``oversized``."""
        return min(self.max_payload_bytes + PACKET_HEADROOM_BYTES, MAX_PACKET_BYTES)

    @property
    def host(self) -> str:
        return _split_url(self.url)[1]

    @property
    def port(self) -> int:
        return _split_url(self.url)[2]

    @property
    def tls(self) -> bool:
        return _split_url(self.url)[0] == "mqtts"

    def password(self) -> str | None:
        """The password from ``password_file`` (preferred) or ``PILOTLINE_MQTT_PASSWORD``.

        Read at every connection attempt, so a rotated secret is picked up without a restart.
        Raises OSError if the file cannot be read.
        """
        return PASSWORD.read(self.password_file)


class MqttMachineSource(Model):
    """A machine's ``mqtt:`` section: the topic its JSON payloads arrive on and their format."""

    topic: str | None = Field(default=None, min_length=1)
    """The topic the machine publishes its JSON payloads on; ``+`` and a last ``#`` are
    wildcards, ``{machine}`` is the machine's id, a last ``{signal}`` level names the one
    signal each message carries (``plant/cnc-1/{signal}``). None: the site's ``mqtt.topics``
    patterns."""
    payload: PayloadSection | None = None
    """The payloads' format: ``pilotline``, ``umh``, ``telegraf``, or a section; default: the
    pattern's (``mqtt.topics``), else ``pilotline``."""
    qos: Literal[1] = 1
    """Subscriptions are QoS 1 (at least once; duplicates are dropped by time stamp)."""
    report_on_change: bool = False
    """True for a publisher that sends the state signal only when it changes: its other
    payloads (heartbeats, other signals) then keep the last state current. By default only a
    payload carrying the state signal does (a heartbeat proves a link, not a state)."""

    @field_validator("topic")
    @classmethod
    def _check_topic(cls, topic: str | None) -> str | None:
        if topic is not None:
            parse_template(topic)
        return topic

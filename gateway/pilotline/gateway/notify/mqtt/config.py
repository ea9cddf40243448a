"""Configuration of the MQTT alert channel: one ``alerts.mqtt`` entry (the broker is the
site's ``mqtt:`` section)."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import AfterValidator

from pilotline.collectors.fields import PositiveSeconds
from pilotline.gateway.notify.config import ChannelConfig

__all__ = ["AlertMqttConfig"]


def _check_topic_prefix(value: str) -> str:
    if not value or value.startswith("/") or value.endswith("/"):
        raise ValueError(f"{value!r}: a topic prefix is non-empty, without a leading or "
                         "trailing /")
    if any(ch in value for ch in "+#\x00"):
        raise ValueError(f"{value!r}: a topic prefix has no wildcards (+, #) or NUL")
    return value


class AlertMqttConfig(ChannelConfig):
    """One ``alerts.mqtt`` entry: publishes to the site's broker (the ``mqtt:`` section) with
    its own client, QoS 1: each notification on ``<topic_prefix>/notifications`` and each
    alert's current state, retained, on ``<topic_prefix>/state/<rule>/<machine>``.

    Unless ``private``, the payloads leave owner names out: any client the broker lets read
    the topics would learn whose machines these are (pilotline check refuses a rule whose
    message names ``{owner}`` and reaches such a channel)."""

    KIND: ClassVar[str] = "mqtt"

    private: bool = False
    """True when the broker's ACLs let only trusted clients read ``topic_prefix``: then the
    payloads carry each alert's owner (and an ``owner`` group label)."""
    topic_prefix: Annotated[str, AfterValidator(_check_topic_prefix)] | None = None
    """Default: ``pilotline/<site>/alerts``."""
    timeout_s: PositiveSeconds = 10.0
    """How long to wait for the connection and for the broker's acknowledgements."""

    def prefix(self, site: str) -> str:
        return self.topic_prefix or f"pilotline/{site}/alerts"

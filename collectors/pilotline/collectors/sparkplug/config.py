"""Configuration of the Sparkplug B host: the site's ``sparkplug:`` section and a machine's.

The host reaches the site's ``mqtt:`` broker (its URL, user, password and TLS) with a session
of its own: its own client id, a clean start and no queue kept while it is away (Sparkplug
recovers through births, not through a backlog).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from pilotline.collectors.fields import Model, PositiveSeconds, Signal

__all__ = ["SparkplugHost", "SparkplugSource"]


def _check_topic_id(value: str) -> str:
    # Sparkplug 3.0 (4.1.1): group, edge node and device ids are single topic levels.
    bad = [c for c in ("/", "+", "#") if c in value]
    if bad:
        raise ValueError(f"{value!r} must not contain {' '.join(bad)}: it is one topic level")
    return value


TopicId = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_check_topic_id)]
MetricName = Annotated[str, Field(min_length=1, max_length=1024)]


class SparkplugSource(Model):
    """A machine's ``sparkplug:`` section: the edge node (or its device) that reports it, and
    which metric gives each signal."""

    group: TopicId
    """The Sparkplug group id (``spBv1.0/<group>/...``)."""
    node: TopicId
    """The edge node id."""
    device: TopicId | None = None
    """The device id, when the machine is a device of the edge node (DBIRTH/DDATA)."""
    metrics: dict[Signal, MetricName] = Field(min_length=1)
    """Signal -> metric name as in the births (``state: "Status/State"``, ``power_w: Power``);
    the state signal must be one of them."""


class SparkplugHost(Model):
    """The site's ``sparkplug:`` section: how the host behaves (it uses the ``mqtt:`` broker)."""

    mode: Literal["passive", "primary"] = "passive"
    """``passive`` subscribes and sends nothing; ``primary`` also publishes its retained STATE
    (``spBv1.0/STATE/<host_id>``, with a matching Will) and may ask edge nodes to rebirth."""
    host_id: Annotated[TopicId, Field(max_length=128)] | None = None
    """The Sparkplug host id (required in primary mode; edge nodes watch its STATE)."""
    client_id: str | None = Field(default=None, min_length=1, max_length=128)
    """The MQTT client id of the host's own session; default ``pilotline-<site>-sparkplug``."""
    reorder_s: PositiveSeconds = Field(default=2.0, le=60)
    """How long a gap in an edge node's ``seq`` may stay open before a rebirth is requested."""
    rebirth_cooldown_s: PositiveSeconds = Field(default=30.0, ge=30)
    """The least time between two rebirth requests to one edge node (doubling while it does
    not rebirth)."""
    rebirth_max_s: PositiveSeconds = Field(default=600.0, ge=30)
    """The longest wait between two rebirth requests to one edge node."""
    rebirth_cap: int = Field(default=10, ge=1, le=1000)
    """The most rebirth requests a minute, all edge nodes together."""
    heartbeat_s: PositiveSeconds = Field(default=10.0, le=3600)
    """While an edge node is born its machines are kept alive this often (Sparkplug reports
    by exception: a quiet machine is not a lost one); keep it under ``stale_after_s``."""

    @model_validator(mode="after")
    def _primary_needs_id(self) -> SparkplugHost:
        if self.mode == "primary" and self.host_id is None:
            raise ValueError("mode primary needs a host_id (spBv1.0/STATE/<host_id>)")
        return self

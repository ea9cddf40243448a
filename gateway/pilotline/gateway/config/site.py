"""The site model: the whole file, assembling the sections each component owns (the MQTT
and OPC UA collectors', the InfluxDB sink's, the alert channels') with the site's own
(zones and machines, owners, defaults, the API, logs, sharding)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pilotline.collectors.fields import Id, Model
from pilotline.collectors.mqtt.config import MqttBrokerConfig
from pilotline.collectors.sparkplug.config import SparkplugHost
from pilotline.gateway.api.config import ApiConfig, api_section
from pilotline.gateway.config.alerts import AlertsConfig
from pilotline.gateway.config.booking import merged_rules
from pilotline.gateway.config.charges import merged_charge
from pilotline.gateway.config.checks import cross_checks
from pilotline.gateway.config.fields import ms
from pilotline.gateway.config.interlock import InterlockSettings, InterlockSpec, merged_interlock
from pilotline.gateway.config.locate import format_loc
from pilotline.gateway.config.machine import Defaults, Machine, Zone
from pilotline.gateway.config.offering import Offering, OwnerPolicy
from pilotline.gateway.config.publish_back import PublishBack
from pilotline.gateway.config.retention import StoreRetention
from pilotline.gateway.shard import Layout, ShardBy, check_shard_text, zone_shard_tag
from pilotline.gateway.sinks.influx.config import InfluxConfig
from pilotline.rules.alerts import AlertRule
from pilotline.rules.booking import BookingRules
from pilotline.rules.booking.charges import ChargeRule
from pilotline.rules.spec import PlantSpec

__all__ = ["CROSS_CHECKED", "LogConfig", "OfferingSource", "SiteConfig"]

OfferingSource = Literal["machine", "owner", "default", "none"]
"""Where a machine's offering policy comes from: its own ``offering:``, its owner's, the
site default ``defaults.offering``, or nowhere (never offered)."""

CROSS_CHECKED: Final = "pilotline.config.cross_checked"
"""Validation context key: the caller runs ``cross_checks`` itself (``load_config`` does, to
report them with their lines)."""


def _zone_name(value: Any) -> Any:
    if isinstance(value, str):
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}: use an IANA name like Europe/Paris or UTC"
            ) from None
    return value


class LogConfig(Model):
    """``log:``: what the gateway logs, and how (docs/operator-guide.md, "Log events")."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    """The least level logged."""
    format: Literal["auto", "json", "console"] = "auto"
    """``json`` (one object a line), ``console``, or ``auto``: console on a terminal, JSON
    otherwise."""

    @field_validator("level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class SiteConfig(Model):
    """The whole file: a pilotline gateway's site configuration."""

    site: Id
    """The site's id: the ``site`` tag of every point, and part of MQTT client ids and topics."""
    mqtt: MqttBrokerConfig | None = None
    """The MQTT broker the machines publish to (needed by MQTT machines and alert channels)."""
    sparkplug: SparkplugHost | None = None
    """The Sparkplug B host (passive or primary) for machines with a ``sparkplug:`` source;
    it uses the ``mqtt:`` broker with a session of its own."""
    influx: InfluxConfig | None = None
    """The InfluxDB points also go to; without it, the embedded store alone."""
    store: Path = Path("./var/pilotline.db")
    """The embedded SQLite store and durable outbox (a shard adds ``.shard-KofN``)."""
    store_retention: StoreRetention = Field(default_factory=StoreRetention)
    """How long the store keeps its history tables (config/retention.py)."""
    api: Annotated[
        ApiConfig, BeforeValidator(api_section, json_schema_input_type=str | ApiConfig)
    ] = Field(default_factory=ApiConfig)
    """Where the HTTP API listens: ``host:port`` (short for ``{listen: host:port}``), or the
    section with the hosts it answers to, the proxies it trusts, the client limits and TLS."""
    defaults: Defaults = Field(default_factory=Defaults)
    """Timings and offering policy of machines that do not set their own."""
    zones: list[Zone] = Field(min_length=1)
    """The zones of the site and their machines."""
    log: LogConfig = Field(default_factory=LogConfig)
    """Log level and format."""
    owners: dict[Id, OwnerPolicy] = Field(default_factory=dict)
    """The owners of machines and their policies; once any is listed, every machine's ``owner`` must
    be."""
    timezone: Annotated[str, BeforeValidator(_zone_name)] = "UTC"
    """The facility's IANA time zone: offering hours and blackouts are in it."""
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    """Alert rules and the channels that are notified of them."""
    shard: Annotated[str | None, BeforeValidator(check_shard_text)] = None
    """``K/N``: this gateway owns the K-th of N shares of the machines (gateway/shard.py,
    docs/scaling.md); ``pilotline run --shard K/N`` overrides it."""
    shard_by: ShardBy = "machine"
    """What a share is made of: machines (an even spread, even in one large zone; zone-level
    points then carry a ``shard`` tag), or whole zones (zone-level points stay whole)."""
    interlock: InterlockSettings = Field(default_factory=InterlockSettings)
    """Where the machines' interlock signals go and how often they are evaluated (which
    machines have one: ``interlock:`` under ``defaults``, an owner or a machine)."""
    publish_back: PublishBack | None = None
    """Publish each machine's state, capacity and current booking, retained, on the
    ``mqtt:`` broker (off without this section; README, "Published back")."""
    _applied_shard: str = PrivateAttr(default="")
    _shard_layout: Layout | None = PrivateAttr(default=None)
    # ``machine()`` is asked per request and per booking: an index, rebuilt when the zones
    # are another list (``restrict`` copies the model with new zones, and its private state)
    _index: dict[str, Machine] = PrivateAttr(default_factory=dict)
    _index_of: object = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _site_checks(self, info: ValidationInfo) -> SiteConfig:
        # load_config runs these on the raw data itself, to report them with their lines
        # and alongside field errors; here they guard configurations built in code.
        if isinstance(info.context, dict) and info.context.get(CROSS_CHECKED):
            return self
        found = cross_checks(self.model_dump(by_alias=True))
        if found:
            raise ValueError("; ".join(f"{format_loc(loc)}: {msg}" for loc, msg in found))
        return self

    @property
    def api_host(self) -> str:
        return self.api.host

    @property
    def api_port(self) -> int:
        return self.api.port

    @property
    def applied_shard(self) -> str:
        """``"K/N"`` once ``config.sharding.restrict`` cut this configuration to one shard."""
        return self._applied_shard

    @property
    def shard_layout(self) -> Layout | None:
        """The whole site's machines and shards once cut (who owns what this one does not)."""
        return self._shard_layout

    @property
    def shard_tag(self) -> str:
        """The ``shard`` tag of this gateway's zone-level points, ``""`` for none."""
        return zone_shard_tag(self._applied_shard, self.shard_by)

    def machines(self) -> list[tuple[Zone, Machine]]:
        return [(zone, machine) for zone in self.zones for machine in zone.machines]

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def offering_of(self, machine: Machine) -> tuple[OfferingSource, Offering | None]:
        """The offering policy that applies to ``machine`` and where it comes from.

        Fails closed: the machine's own, else its owner's, else the site default the file
        names; none of them, and the machine is never offered (its idle time is still
        ``available``). An owner's name missing from ``owners:`` is refused by
        ``cross_checks``, so a typo cannot silently drop the owner's policy.
        """
        if machine.offering is not None:
            return "machine", machine.offering
        owner = self.owners.get(machine.owner)
        if owner is not None and owner.offering is not None:
            return "owner", owner.offering
        if self.defaults.offering is not None:
            return "default", self.defaults.offering
        return "none", None

    def machine(self, machine_id: str) -> Machine:
        """The machine ``machine_id``; ``KeyError`` if the site has none of that id."""
        if self._index_of is not self.zones:
            self._index = {machine.id: machine for _, machine in self.machines()}
            self._index_of = self.zones
        try:
            return self._index[machine_id]
        except KeyError:
            raise KeyError(machine_id) from None

    def booking_rules(self, machine_id: str) -> BookingRules:
        """The rules a booking of ``machine_id`` must keep: each key from the machine's own
        ``booking:``, else its owner's, else ``defaults.booking``, else ``BookingRules``'."""
        machine = self.machine(machine_id)
        owner = self.owners.get(machine.owner)
        return merged_rules(
            [self.defaults.booking, owner.booking if owner else None, machine.booking]
        )

    def charge_rule(self, machine_id: str) -> ChargeRule:
        """How a booking of ``machine_id`` is charged: each key of ``booking.charge`` from the
        machine, else its owner, else ``defaults``, else ``ChargeRule``'s default."""
        machine = self.machine(machine_id)
        owner = self.owners.get(machine.owner)
        layers = [self.defaults.booking, owner.booking if owner else None, machine.booking]
        return merged_charge([layer.charge if layer else None for layer in layers])

    def interlock_of(self, machine_id: str) -> InterlockSpec | None:
        """``machine_id``'s interlock (each key from its own ``interlock:``, else its
        owner's, else ``defaults.interlock``), or None: it has none."""
        machine = self.machine(machine_id)
        owner = self.owners.get(machine.owner)
        return merged_interlock(
            machine_id,
            [self.defaults.interlock, owner.interlock if owner else None, machine.interlock],
        )

    def maintenance(self, machine_id: str) -> tuple[tuple[int, int], ...]:
        """``machine_id``'s planned maintenance, ``[start, end)`` epoch ms in file order (a
        time without an offset read in the site's ``timezone``)."""
        tz = self.tz
        return tuple(m.interval(tz) for m in self.machine(machine_id).maintenance)

    def plant_spec(self) -> PlantSpec:
        tz = self.tz
        return PlantSpec(
            machines=tuple(
                m.spec(zone.id, self.defaults, self.offering_of(m)[1], tz)
                for zone, m in self.machines()
            ),
            publish_interval_ms=ms(self.defaults.publish_interval_s),
        )

    def alert_rules(self) -> tuple[AlertRule, ...]:
        return tuple(r.rule() for r in self.alerts.rules)

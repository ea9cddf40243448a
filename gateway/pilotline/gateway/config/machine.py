"""A machine of the site: its source (a collector's section), how its state is read, and
its timings; the zones that group machines; the defaults machines fall back on."""

from __future__ import annotations

import functools
import types
from datetime import UTC, tzinfo
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from pilotline.collectors.fields import (
    Id,
    Model,
    PositiveSeconds,
    Seconds,
    Signal,
    Threshold,
)
from pilotline.collectors.mqtt.config import MqttMachineSource
from pilotline.collectors.opcua.config import OpcuaSource
from pilotline.collectors.sparkplug.config import SparkplugSource
from pilotline.gateway.config.booking import Booking, Maintenance
from pilotline.gateway.config.fields import Capability, StateName, dedupe, ms
from pilotline.gateway.config.interlock import InterlockPolicy, MachineInterlock
from pilotline.gateway.config.offering import Offering
from pilotline.rules.policy import NEVER
from pilotline.rules.spec import MachineSpec, MappedState, StateRule, ThresholdState
from pilotline.rules.states import DEFAULT_STATE_MAP, State

# Seconds, not minutes: a clock further ahead than this is wrong or forged, and every second
# allowed is a second a forged stamp wins over the honest source (issue 19).
SkewSeconds = Annotated[Seconds, Field(le=60)]

__all__ = ["Defaults", "Machine", "StateConfig", "Zone"]


class StateConfig(Model):
    """``state:``: which signal gives the state, through a map or thresholds.

    Without ``map`` or thresholds, the signal goes through the default map alone (OPC
    40001-1, PackML, MTConnect and SEMI E10 names); a ``map`` is laid over those defaults.
    """

    signal: Signal
    """The signal that carries the state (an enumeration, or a number with thresholds)."""
    map: dict[str, StateName] | None = None
    """Values of the signal to states, laid over the default map (quote keys YAML reads as booleans:
    ``'on'``)."""
    running_above: Threshold | None = None
    """A numeric signal at or above this is ``running`` (goes with ``idle_below``)."""
    idle_below: Threshold | None = None
    """A numeric signal below this is ``idle``; in between, the previous state holds."""

    @field_validator("map", mode="before")
    @classmethod
    def _map_keys(cls, value: Any) -> Any:
        # OPC UA and PackML enumerations arrive as integers, which the core looks up as text.
        if not isinstance(value, dict):
            return value
        out: dict[Any, Any] = {}
        for key, state in value.items():
            if isinstance(key, bool):
                raise ValueError(
                    f"key {str(key).lower()!r} is a boolean to YAML (yes/no/on/off/true/false "
                    "are): quote it, e.g. 'on': running"
                )
            out[str(key) if isinstance(key, int) else key] = state
        return out

    @model_validator(mode="after")
    def _one_rule(self) -> StateConfig:
        thresholds = (self.running_above, self.idle_below)
        if self.map is not None and thresholds != (None, None):
            raise ValueError("use either map or running_above/idle_below, not both")
        if (self.running_above is None) != (self.idle_below is None):
            raise ValueError("running_above and idle_below go together: set both")
        if (
            self.running_above is not None
            and self.idle_below is not None
            and self.idle_below > self.running_above
        ):
            raise ValueError(
                f"idle_below ({self.idle_below:g}) must not exceed running_above "
                f"({self.running_above:g})"
            )
        return self

    def rule(self) -> StateRule:
        """The core's rule: thresholds, or this map laid over ``DEFAULT_STATE_MAP``."""
        if self.running_above is not None and self.idle_below is not None:
            return ThresholdState(self.signal, self.running_above, self.idle_below)
        return _mapped_state(self.signal, tuple((self.map or {}).items()))


@functools.lru_cache(maxsize=1024)
def _mapped_state(signal: str, overrides: tuple[tuple[str, str], ...]) -> MappedState:
    """One (immutable) rule for every machine with the same signal and map, rather than a
    copy of the default map per machine (measured: benchmarks/README.md)."""
    mapping: dict[str, State] = dict(DEFAULT_STATE_MAP)
    mapping.update({key: State(name) for key, name in overrides})
    return MappedState(signal, types.MappingProxyType(mapping))


class Defaults(Model):
    """``defaults:``: timings every machine gets unless it sets its own, and the site's
    default offering policy."""

    debounce_s: Seconds = 20.0
    """A new state counts only once it has held this long (short blips never split a window)."""
    stale_after_s: PositiveSeconds = 60.0
    """A machine with no sample for this long becomes ``offline``."""
    min_idle_s: Seconds = 900.0
    """An idle window becomes available (and may be offered) once it has lasted this long."""
    publish_interval_s: PositiveSeconds = 60.0
    """Capacity and zone capacity are written at least this often."""
    max_skew_s: SkewSeconds = 2.0
    """How far a machine's stamps may run ahead of the gateway's clock; a sample further
    ahead is quarantined as ``future`` (its clock is wrong, or it is forged)."""
    offering: Offering | None = None
    """The policy of a machine that has none of its own and whose owner has none
    (``always``, or weekly hours and blackouts); without it such a machine is never offered."""
    booking: Booking | None = None
    """Site-wide booking rules, under an owner's ``booking:`` and a machine's, key by key."""
    interlock: InterlockPolicy | None = None
    """Every machine gets an interlock signal (issue 15) with this timing, under an owner's
    ``interlock:`` and a machine's, key by key."""


class Machine(Model):
    """A machine: its owner, what it can do, where its data comes from (``mqtt`` or
    ``opcua``), how its state is read, and any timing of ``defaults`` it sets itself."""

    id: Id
    """The machine's id, unique in the site."""
    owner: Id
    """The id of the company that owns the machine (one of ``owners:`` once that lists any)."""
    capabilities: Annotated[list[Capability], AfterValidator(dedupe)] = Field(default_factory=list)
    """What the machine can do (``laser-cutting``): tenants book by capability."""
    mqtt: MqttMachineSource | None = None
    """The machine publishes on the site's MQTT broker (one of ``mqtt`` and ``opcua``)."""
    opcua: OpcuaSource | None = None
    """The machine is read from an OPC UA server (one of ``mqtt`` and ``opcua``)."""
    sparkplug: SparkplugSource | None = None
    """The machine is (part of) a Sparkplug B edge node or device on the site's broker."""
    state: StateConfig
    """How the machine's state is read from its signals."""
    debounce_s: Seconds | None = None
    """Overrides ``defaults.debounce_s`` for this machine."""
    stale_after_s: PositiveSeconds | None = None
    """Overrides ``defaults.stale_after_s`` for this machine."""
    min_idle_s: Seconds | None = None
    """Overrides its offering's ``min_idle_s`` and ``defaults.min_idle_s`` for this machine."""
    publish_interval_s: PositiveSeconds | None = None
    """Overrides ``defaults.publish_interval_s`` for this machine."""
    max_skew_s: SkewSeconds | None = None
    """Overrides ``defaults.max_skew_s`` for this machine."""
    offering: Offering | None = None
    """This machine's own offering policy, replacing its owner's and the site default."""
    booking: Booking | None = None
    """This machine's booking rules: each key it sets overrides its owner's and the site's."""
    maintenance: list[Maintenance] = Field(default_factory=list)
    """Planned maintenance periods (``{from, to, reason}``): taken out of the machine's
    bookable time (``SiteConfig.maintenance``)."""
    interlock: MachineInterlock | None = None
    """This machine's interlock signal (an access signal, never a safety function): its keys
    override its owner's and the site's."""

    @property
    def source(self) -> Literal["mqtt", "opcua", "sparkplug"]:
        if self.sparkplug is not None:
            return "sparkplug"
        return "mqtt" if self.mqtt is not None else "opcua"

    def signals(self) -> tuple[str, ...]:
        """Signals this machine is known to deliver: its OPC UA nodes, or its state signal."""
        if self.opcua is not None:
            return tuple(self.opcua.nodes)
        if self.sparkplug is not None:
            return tuple(self.sparkplug.metrics)
        return (self.state.signal,)

    def max_skew_ms(self, defaults: Defaults) -> int:
        return ms(defaults.max_skew_s if self.max_skew_s is None else self.max_skew_s)

    def spec(
        self,
        zone: str,
        defaults: Defaults,
        offering: Offering | None = None,
        tz: tzinfo = UTC,
    ) -> MachineSpec:
        """The core's spec, under ``offering`` (``SiteConfig.offering_of``): None is no
        policy, so never offered."""

        def pick(own: float | None, default: float) -> int:
            return ms(default if own is None else own)

        min_idle_s = self.min_idle_s
        if min_idle_s is None and offering is not None:
            min_idle_s = offering.min_idle_s
        return MachineSpec(
            id=self.id,
            zone=zone,
            owner=self.owner,
            state=self.state.rule(),
            capabilities=tuple(self.capabilities),
            debounce_ms=pick(self.debounce_s, defaults.debounce_s),
            stale_after_ms=pick(self.stale_after_s, defaults.stale_after_s),
            min_idle_ms=pick(min_idle_s, defaults.min_idle_s),
            publish_interval_ms=pick(self.publish_interval_s, defaults.publish_interval_s),
            report_on_change=self.opcua is not None
            or self.sparkplug is not None  # Sparkplug reports by exception
            or (self.mqtt is not None and self.mqtt.report_on_change),
            policy=offering.policy(tz) if offering is not None else NEVER,
        )


class Zone(Model):
    """A zone of the site (a hall, a line) and its machines."""

    id: Id
    """The zone's id, unique in the site (a hall, a line: zone capacity is summed over it)."""
    machines: list[Machine] = Field(min_length=1)
    """The machines of the zone."""

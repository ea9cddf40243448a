"""What the core needs to know about each machine: plain, validated-elsewhere data.

The gateway builds these from the pydantic configuration; the core raises ``RulesConfigError``
at construction for anything it cannot work with, so bad rules never reach run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pilotline.rules.policy import ALWAYS, OfferingPolicy
from pilotline.rules.states import State


@dataclass(frozen=True, slots=True)
class MappedState:
    """State from an enumerated signal: its value is looked up in ``mapping``."""

    signal: str
    mapping: Mapping[str, State]


@dataclass(frozen=True, slots=True)
class ThresholdState:
    """State from a numeric signal with hysteresis.

    ``value >= running_above`` is running, ``value < idle_below`` is idle; in between, the
    previous classification holds.
    """

    signal: str
    running_above: float
    idle_below: float


StateRule = MappedState | ThresholdState


@dataclass(frozen=True, slots=True)
class MachineSpec:
    id: str
    zone: str
    owner: str
    state: StateRule
    capabilities: tuple[str, ...] = ()
    debounce_ms: int = 20_000
    stale_after_ms: int = 60_000
    min_idle_ms: int = 900_000
    publish_interval_ms: int = 60_000
    policy: OfferingPolicy = ALWAYS  # when available idle time may be offered
    # True for a source that sends a value only when it changes (an OPC UA subscription, an
    # MQTT publisher configured so): its heartbeats keep the last value current. False (MQTT
    # JSON by default): only a sample carrying the state signal keeps the state alive.
    report_on_change: bool = False


@dataclass(frozen=True, slots=True)
class PlantSpec:
    machines: tuple[MachineSpec, ...]
    publish_interval_ms: int = 60_000

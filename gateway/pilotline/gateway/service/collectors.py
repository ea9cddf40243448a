"""The collectors: what they hand in, what the gateway reads of them, how a site gets them.

A collector turns a transport (MQTT, OPC UA) into calls of ``Intake.sample`` and
``Intake.reject`` (the gateway's ``Ingest``). The gateway runs each as a named task and stops
it by cancelling that task; it reads each one's ``/health`` part and gauges through
``Collector`` alone, so a new kind of collector needs no change in health.py or the metrics.
The collectors satisfy these protocols structurally: they never import the gateway.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Protocol

from pilotline.collectors.mqtt.collector import AckToken, MqttCollector
from pilotline.collectors.mqtt.routes import Route
from pilotline.collectors.sparkplug.collector import SparkplugCollector
from pilotline.collectors.sparkplug.config import SparkplugHost
from pilotline.collectors.sparkplug.host import Binding
from pilotline.gateway.clock import Clock
from pilotline.gateway.config import SiteConfig
from pilotline.rules import Sample
from pilotline.rules.spec import MappedState
from pilotline.rules.states import State

if TYPE_CHECKING:  # asyncua is imported only for a site with OPC UA machines (see below)
    from pilotline.collectors.opcua.collector import OpcuaCollector


class Refused(Protocol):
    """An input a collector refused (MQTT and OPC UA ``Quarantined`` alike)."""

    @property
    def arrival_ms(self) -> int: ...
    @property
    def topic(self) -> str: ...
    @property
    def machine(self) -> str | None: ...
    @property
    def reason(self) -> str: ...
    @property
    def head(self) -> bytes: ...


class Intake(Protocol):
    """Where collectors hand what they receive (``Ingest``)."""

    def sample(self, sample: Sample, ack: AckToken | None = None) -> None: ...
    def reject(self, source: str, item: Refused, ack: AckToken | None = None) -> None: ...
    def history(self, sample: Sample) -> None: ...


class Collector(Protocol):
    @property
    def name(self) -> str:
        """``mqtt``, ``opcua:<endpoint>``: its key in /health, its label in /metrics."""
        ...

    @property
    def connected(self) -> bool:
        """Up now, and its input its own (the alert rules' collector state): an MQTT
        session that another client keeps taking over counts as down."""
        ...

    async def run(self) -> None:
        """Connect and reconnect forever; stopped by cancellation."""
        ...

    def health_report(self, now_ms: int) -> dict[str, Any]:
        """Its part of ``/health``: ``healthy``, ``why`` (None when healthy), then details."""
        ...

    def gauges(self) -> tuple[bool, int, int, int, dict[str, int]]:
        """For /metrics: connected, reconnects, values with a Bad status, received, and
        signals dropped beyond a payload's limit by machine."""
        ...


def mqtt_topics(config: SiteConfig) -> dict[str, str]:
    """Topic filter -> machine id of the machines that publish over MQTT."""
    return {route.topic_filter: route.machine for route in mqtt_routes(config)}


def mqtt_routes(config: SiteConfig) -> list[Route]:
    """Each MQTT machine's topic templates and payload formats: its own ``mqtt.topic``, else
    every site-wide pattern of ``mqtt.topics`` with its id in the ``{machine}`` level."""
    patterns = config.mqtt.topics if config.mqtt is not None else []
    routes: list[Route] = []
    for _, m in config.machines():
        source = m.mqtt
        if source is None:
            continue
        if source.topic is not None:
            fmt = source.payload.compiled() if source.payload is not None else None
            routes.append(Route.of(source.topic, m.id, fmt))
            continue
        for pattern in patterns:
            own = source.payload if source.payload is not None else pattern.payload
            routes.append(Route.of(pattern.topic, m.id, own.compiled()))
    return routes


def mqtt_signals(config: SiteConfig) -> dict[str, frozenset[str]]:
    """Machine -> the signals its configuration reads (its state signal and every signal an
    alert rule watches), which a payload beyond ``mqtt.max_signals`` always keeps."""
    watched = {r.signal for r in config.alerts.rules if r.signal is not None}
    return {
        m.id: frozenset({m.state.signal, *watched})
        for _, m in config.machines()
        if m.mqtt is not None
    }


def mqtt_collector(config: SiteConfig, intake: Intake, clock_ms: Clock) -> MqttCollector:
    """The site's MQTT collector (its ``mqtt:`` broker, one topic per machine)."""
    assert config.mqtt is not None
    return MqttCollector(
        config.mqtt,
        {},
        intake.sample,
        functools.partial(intake.reject, "mqtt"),
        client_id=config.mqtt.client_id or f"pilotline-{config.site}",
        clock_ms=clock_ms,
        signals=mqtt_signals(config),
        routes=mqtt_routes(config),
    )


def opcua_collectors(config: SiteConfig, intake: Intake, clock_ms: Clock) -> list[OpcuaCollector]:
    """One collector per endpoint, shared by its machines."""
    machines = [
        (m.id, m.opcua, m.state.signal) for _, m in config.machines() if m.opcua is not None
    ]
    if not machines:
        return []
    # Imported here: asyncua costs memory and start-up time (measured: benchmarks/README.md),
    # for nothing on an MQTT-only site.
    from pilotline.collectors.opcua.collector import (  # noqa: PLC0415
        OpcuaCollector,
        machines_by_endpoint,
    )

    # The client certificate lives beside the store so the servers' trust in it survives
    # restarts.
    pki_dir = config.store.parent / "opcua-pki"
    return [
        OpcuaCollector(
            endpoint,
            by_id,
            intake.sample,  # OPC UA has nothing to acknowledge
            functools.partial(intake.reject, "opcua"),
            pki_dir=pki_dir,
            clock_ms=clock_ms,
        )
        for endpoint, by_id in machines_by_endpoint(machines).items()
    ]


def sparkplug_bindings(config: SiteConfig) -> list[Binding]:
    """The machines bound to Sparkplug edge nodes and devices."""
    return [
        Binding(m.id, s.group, s.node, s.device, dict(s.metrics))
        for _, m in config.machines()
        if (s := m.sparkplug) is not None
    ]


def _offline_value(rule: object) -> str | None:
    """A value of a state map that reads as ``offline`` (``NotAvailable`` if it does)."""
    if not isinstance(rule, MappedState):
        return None
    words = [k for k, v in rule.mapping.items() if v is State.OFFLINE]
    return "NotAvailable" if "NotAvailable" in words else next(iter(sorted(words)), None)


def sparkplug_collector(
    config: SiteConfig, intake: Intake, clock_ms: Clock
) -> SparkplugCollector | None:
    """The Sparkplug host, on the ``mqtt:`` broker with a session of its own; None without
    Sparkplug machines."""
    bindings = sparkplug_bindings(config)
    if not bindings or config.mqtt is None:
        return None
    offline: dict[str, tuple[str, str] | None] = {}
    for _, m in config.machines():
        if m.sparkplug is not None:
            word = _offline_value(m.state.rule())
            offline[m.id] = None if word is None else (m.state.signal, word)
    return SparkplugCollector(
        config.mqtt,
        config.sparkplug or SparkplugHost(),
        bindings,
        intake.sample,
        functools.partial(intake.reject, "sparkplug"),
        client_id=f"pilotline-{config.site}-sparkplug",
        offline_values=offline,
        clock_ms=clock_ms,
        on_history=intake.history,
    )

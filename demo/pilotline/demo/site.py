"""The demo site's configuration, in DESIGN.md's YAML format, built from a :class:`Plant`.

Enumerated machines rely on the default vocabulary table (``state: {signal: state}``) plus
whatever explicit overrides the simulation needs (``SimMachine.state_map``, e.g. the coater
whose planned maintenance reads ``OutOfService``); power-only machines get thresholds.

With :class:`AlertChannels` the site also gets an ``alerts:`` section: rules an operator of
this line would write, and one channel of each kind (webhook, e-mail, MQTT) pointed at the
demo's operator inbox (demo/inbox.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from pilotline.demo.plant import IDLE_BELOW_W, RUNNING_ABOVE_W, Plant, SimMachine

__all__ = ["ALERT_RULES", "AlertChannels", "demo_site_yaml"]

WEBHOOK: Final = "ops-webhook"
MAIL: Final = "ops-mail"
MQTT: Final = "ops-mqtt"

ALERT_RULES: Final[tuple[dict[str, Any], ...]] = (
    {
        "name": "machine-down",
        "severity": "critical",
        "state": "down",
        "for": "20s",
        "message": "{machine} ({zone}) is down",
    },
    {
        "name": "machine-offline",
        "severity": "warning",
        "state": "offline",
        "for": "20s",
        "message": "{machine} ({zone}) has stopped reporting",
    },
    {
        # The laser sources' chillers hold 18-20 °C; above 24 the optics drift.
        "name": "chiller-hot",
        "severity": "warning",
        "signal": "chiller_c",
        "above": 24,
        "clear": 22,
        "for": "10s",
        "message": "{machine} ({zone}) chiller at {value} °C",
    },
    {
        "name": "capacity-available",
        "severity": "info",
        "offered_idle_for": "2m",
        "message": "{machine} ({zone}) is free to book",
    },
    {
        "name": "collector-down",
        "severity": "critical",
        "collector": "disconnected",
        "for": "15s",
        "message": "the collector of {machine} ({zone}) is disconnected",
    },
)
"""The demo's alert rules (machine-down and machine-offline are what its staged incidents
trip; ``for:`` plus ``group_wait`` is how long an operator waits for the first message)."""


@dataclass(frozen=True, slots=True)
class AlertChannels:
    """Where the demo's operator inbox listens: a webhook URL, an SMTP port on loopback, and
    the MQTT topic prefix (on the site's broker) under which alerts are published."""

    webhook_url: str
    smtp_port: int
    mqtt_topic_prefix: str
    smtp_host: str = "127.0.0.1"


def _state(machine: SimMachine) -> dict[str, Any]:
    if machine.kind == "power":
        return {"signal": "power_w", "running_above": RUNNING_ABOVE_W, "idle_below": IDLE_BELOW_W}
    state: dict[str, Any] = {"signal": "state"}
    if machine.state_map:
        state["map"] = dict(machine.state_map)
    return state


def demo_site_yaml(
    plant: Plant,
    *,
    mqtt_url: str,
    store: Path,
    api: str,
    debounce_s: float = 5,
    stale_after_s: float = 15,
    min_idle_s: float = 60,
    publish_interval_s: float = 10,
    site: str = "demo-pilot",
    influx_url: str | None = None,
    alerts: AlertChannels | None = None,
    booking: Mapping[str, Any] | None = None,
    approving_owner: str | None = None,
) -> str:
    """YAML text of a site watching every machine of ``plant`` over MQTT.

    Without ``influx_url`` the configuration has no ``influx`` section: the gateway keeps
    its data in the embedded store alone. Without ``alerts`` it has no ``alerts`` section.
    ``booking``: the site's ``defaults.booking``; ``approving_owner``: an owner who approves
    each booking of its machines (demo/bookings.py).
    """
    zones: dict[str, list[dict[str, Any]]] = {}
    for machine in plant.machines:
        zones.setdefault(machine.zone, []).append(
            {
                "id": machine.id,
                "owner": machine.owner,
                "capabilities": list(machine.capabilities),
                "mqtt": {"topic": machine.topic},
                "state": _state(machine),
            }
        )
    doc: dict[str, Any] = {"site": site, "mqtt": {"url": mqtt_url}}
    if influx_url is not None:
        doc["influx"] = {"url": influx_url, "org": "demo", "bucket": "pilotline"}
    doc["store"] = str(store)
    doc["api"] = api
    doc["defaults"] = {
        "debounce_s": debounce_s,
        "stale_after_s": stale_after_s,
        "min_idle_s": min_idle_s,
        "publish_interval_s": publish_interval_s,
        # Offering fails closed: the demo's owners name no policy, so the site default
        # offers every machine's idle time at any hour.
        "offering": "always",
    }
    if booking is not None:
        doc["defaults"]["booking"] = dict(booking)
    if approving_owner is not None:  # once owners are listed, every one must be
        doc["owners"] = {
            owner: {"booking": {"approval": True}} if owner == approving_owner else {}
            for owner in sorted({m.owner for m in plant.machines})
        }
    doc["zones"] = [{"id": zone, "machines": machines} for zone, machines in zones.items()]
    if alerts is not None:
        doc["alerts"] = _alerts(alerts)
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None)


def _alerts(channels: AlertChannels) -> dict[str, Any]:
    """The ``alerts:`` section: every channel takes warnings and above (capacity, an info
    alert, shows in /api/alerts only); a zone-wide outage is one group per (rule, zone)."""
    return {
        "group_by": ["rule", "zone"],
        "group_wait": "10s",
        # Short for a demo, so a resolution follows its alert within a minute.
        "group_interval": "30s",
        "repeat_interval": "4h",
        "rules": [dict(rule) for rule in ALERT_RULES],
        "webhooks": [
            {
                "name": WEBHOOK,
                "url": channels.webhook_url,
                "format": "json",
                "min_severity": "warning",
            }
        ],
        "email": [
            {
                "name": MAIL,
                "host": channels.smtp_host,
                "port": channels.smtp_port,
                "starttls": False,  # loopback to the demo inbox; a real relay takes STARTTLS
                "from": "pilotline@demo.local",
                "to": ["ops@demo.local"],
                "min_severity": "warning",
            }
        ],
        "mqtt": [
            {
                "name": MQTT,
                "topic_prefix": channels.mqtt_topic_prefix,
                "min_severity": "warning",
            }
        ],
    }

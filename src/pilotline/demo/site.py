"""The demo site's configuration, in DESIGN.md's YAML format, built from a :class:`Plant`.

Enumerated machines rely on the default vocabulary table (``state: {signal: state}``) plus
whatever explicit overrides the simulation needs (``SimMachine.state_map``, e.g. the coater
whose planned maintenance reads ``OutOfService``); power-only machines get thresholds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pilotline.demo.plant import IDLE_BELOW_W, RUNNING_ABOVE_W, Plant, SimMachine

__all__ = ["demo_site_yaml"]


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
) -> str:
    """YAML text of a site watching every machine of ``plant`` over MQTT.

    Without ``influx_url`` the configuration has no ``influx`` section: the gateway keeps
    its data in the embedded store alone.
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
    }
    doc["zones"] = [{"id": zone, "machines": machines} for zone, machines in zones.items()]
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None)

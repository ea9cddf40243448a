"""Site configurations built from the parts a test cares about.

``site_yaml`` writes the YAML text of a site from its zones and machines and any top-level
key; what a test does not give is a small unit site: the MQTT broker and InfluxDB on port 1
of the loopback (nothing listens: no collector or writer gets anywhere) and defaults with no
debounce. Tests that pin a file's exact text or line numbers (configuration errors) keep
their literal YAML instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from pilotline.demo.opcua_server import demo_nodes
from pilotline.gateway.config import ConfigError, ConfigIssue, SiteConfig, load_config

UNIT_MQTT: Mapping[str, Any] = {"url": "mqtt://127.0.0.1:1"}
UNIT_INFLUX: Mapping[str, Any] = {"url": "http://127.0.0.1:1", "org": "o", "bucket": "b"}
UNIT_DEFAULTS: Mapping[str, Any] = {
    "debounce_s": 0, "stale_after_s": 60, "min_idle_s": 0, "publish_interval_s": 60
}
POWER_STATE: Mapping[str, Any] = {"signal": "power_w", "running_above": 120, "idle_below": 60}
"""Running above 120 W, idle below 60 W: the state of a machine that reports no state."""


def machine_config(
    id: str,
    owner: str = "acme",
    *,
    topic: str | None = None,
    opcua: Mapping[str, Any] | None = None,
    state: Mapping[str, Any] | None = None,
    **keys: Any,
) -> dict[str, Any]:
    """A machine of ``owner`` read over MQTT from ``topic`` (``t/<id>`` unless given), or
    from the OPC UA source ``opcua``; its state is its ``state`` signal unless ``state`` says
    otherwise; ``keys`` are any other of its keys (``capabilities``, ``offering``...)."""
    source = {"opcua": opcua} if opcua is not None else {"mqtt": {"topic": topic or f"t/{id}"}}
    return {"id": id, "owner": owner, **keys, **source, "state": state or {"signal": "state"}}


def demo_opcua(endpoint: str, machine: str, state_model: str) -> dict[str, Any]:
    """The OPC UA source of ``machine`` on the demo server at ``endpoint``: its nodes there,
    sampled every 50 ms and published every 100 ms."""
    return {
        "endpoint": endpoint,
        "nodes": demo_nodes(machine),
        "state_model": state_model,
        "publishing_interval_ms": 100,
        "sampling_interval_ms": 50,
    }


LASER_TOPIC = "pilot/photonics/laser-01/telemetry"
CAMERA_TOPIC = "pilot/imaging/cam-02/telemetry"


def pilot_laser(*capabilities: str) -> dict[str, Any]:
    """The pilot line's laser-01 (zone photonics) on the demo's topic."""
    return machine_config(
        "laser-01", "acme-optics", capabilities=list(capabilities or ["laser-cutting"]),
        topic=LASER_TOPIC,
    )


def pilot_camera() -> dict[str, Any]:
    """The pilot line's cam-02 (zone imaging) on the demo's topic: a state from its power."""
    return machine_config(
        "cam-02", "lumen-group", capabilities=["optical-inspection"], topic=CAMERA_TOPIC,
        state=POWER_STATE,
    )


def site_yaml(
    zones: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    site: str = "unit",
    mqtt: Mapping[str, Any] | None = UNIT_MQTT,
    influx: Mapping[str, Any] | None = UNIT_INFLUX,
    store: Path | str | None = None,
    defaults: Mapping[str, Any] | None = UNIT_DEFAULTS,
    alerts: Mapping[str, Any] | None = None,
    **keys: Any,
) -> str:
    """The YAML of a site with ``zones`` (zone id -> its machines); ``None`` leaves a section
    out, ``keys`` are any other top-level keys (``api``, ``log``, ``owners``...)."""
    doc: dict[str, Any] = {"site": site}
    for key, value in (("mqtt", mqtt), ("influx", influx), ("store", store)):
        if value is not None:
            doc[key] = str(value) if isinstance(value, Path) else value
    doc.update(keys)
    if defaults is not None:
        doc["defaults"] = defaults
    doc["zones"] = [{"id": zone, "machines": list(machines)} for zone, machines in zones.items()]
    if alerts is not None:
        doc["alerts"] = alerts
    return yaml.dump(_plain(doc), Dumper=_Dumper, sort_keys=False, width=1_000)


def live_site(
    zones: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    mqtt_url: str,
    client_id: str,
    port: int,
    influx_url: str | None = None,
    **keys: Any,
) -> str:
    """``site_yaml`` for a gateway that runs: MQTT as ``client_id``, reconnecting within a
    second; InfluxDB (where a URL is given) in org ``pilot``, bucket ``pilotline``, flushed
    every 0.1 s; the API on ``127.0.0.1:<port>``."""
    influx = None
    if influx_url is not None:
        influx = {"url": influx_url, "org": "pilot", "bucket": "pilotline", "flush_interval_s": 0.1}
    return site_yaml(
        zones,
        mqtt={"url": mqtt_url, "client_id": client_id, "reconnect_max_s": 1},
        influx=influx,
        api=f"127.0.0.1:{port}",
        **keys,
    )


def _plain(value: Any) -> Any:
    """Mappings and sequences as the dicts and lists the YAML dumper knows."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


class _Dumper(yaml.SafeDumper):
    """Writes a value used twice (one state mapping for many machines) out twice, with no
    YAML anchor: the text reads as a hand-written file does."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def load_text(tmp_path: Path, text: str) -> SiteConfig:
    """``text`` written as ``tmp_path/pilotline.yaml`` and loaded (files it names unchecked)."""
    path = tmp_path / "pilotline.yaml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, check_files=False)


def refused(tmp_path: Path, text: str) -> list[ConfigIssue]:
    """What loading ``text`` (as ``load_text``) reports; the test fails if it loads."""
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, text)
    return caught.value.issues
